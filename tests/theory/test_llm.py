"""theory/llm against the worked figures of the seed ("Why LLM Inference is So Difficult").

Each seed figure is reproduced within 2% under the assumption the seed made, named in the test.
"""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roofbench.theory import ops
from roofbench.theory.hardware import get_gpu
from roofbench.theory.llm import (
    MODELS,
    ModelConfig,
    decode_floor_s,
    decode_step,
    from_hf_config,
    load_model,
    naive_step,
    predict,
    prefill,
)
from roofbench.theory.roofline import Roof

L405 = MODELS["llama3-405b"]
H100 = Roof.from_spec(get_gpu("h100-sxm"))
# The seed's "1 PFLOP/s" H100 (fp16 peak rounded), bandwidth from the datasheet, no launch floor.
PETA = Roof(peak_flops=1e15, bandwidth_bytes_per_s=3.35e12, launch_s=0.0)
KIB, SEED_TOLERANCE = 1024, 0.02


def _attention_flops(model, seq, batch=1, causal=False):
    per_layer = ops.prefill_attention(
        batch, model.num_heads, model.num_kv_heads, seq, model.head_dim, causal
    )
    return model.num_layers * per_layer.flops


def test_published_parameter_counts_of_llama3():
    # Meta's model cards: 8.03B, 70.6B and 405.9B parameters (embeddings and LM head included).
    assert MODELS["llama3-8b"].params == pytest.approx(8.03e9, rel=0.002)
    assert MODELS["llama3-70b"].params == pytest.approx(70.6e9, rel=0.002)
    assert L405.params == pytest.approx(405.9e9, rel=0.002)


def test_seed_naive_round_at_1000_tokens_is_744_tflop_and_074_s():
    """Assumption: 11*d^2 weights per layer (MHA attention 4d^2 + MLP 7d^2), no embeddings, the
    full N^2 attention, and a GPU of exactly 1 PFLOP/s. Attention adds the 1.1% the seed drops."""
    d = 16384
    seed_model = ModelConfig(
        name="seed-405b",
        hidden_size=d,
        num_layers=126,
        num_heads=128,
        num_kv_heads=128,
        intermediate_size=7 * d // 3,  # 3*d*i = 7*d^2
        vocab_size=1,
    )
    step = naive_step(seed_model, PETA, sequence=1000, causal=False)
    assert step.flops == pytest.approx(744e12, rel=SEED_TOLERANCE)
    assert step.time_s == pytest.approx(0.744, rel=SEED_TOLERANCE)
    assert step.bound == "compute"


def test_seed_naive_step_at_a_million_tokens_takes_about_25_hours():
    """Assumption: 2*N*P + 4*L*N^2*d (full N^2) on a 1 PFLOP/s GPU, real Llama 3 405B shapes."""
    step = naive_step(L405, PETA, sequence=1_000_000, causal=False)
    assert step.time_s / 3600 == pytest.approx(2.5, rel=SEED_TOLERANCE)


def test_seed_mha_kv_cache_is_64_kib_per_layer_and_8_tb_per_million_tokens():
    """Assumption: unoptimized MHA (128 KV heads of 128), fp16; 'KB' is KiB, 'TB' decimal."""
    mha = MODELS["llama3-405b-mha"]
    per_token = mha.kv_cache_bytes_per_token("fp16")
    assert per_token / mha.num_layers == 64 * KIB
    assert per_token == 8064 * KIB
    assert mha.kv_cache_bytes(1_000_000, dtype="fp16") / 1e12 == pytest.approx(8.26, rel=0.01)


def test_seed_gqa_kv_cache_is_504_kib_per_token_and_516_gb_at_100k():
    """Assumption: Llama 3 405B's real GQA layout (8 KV heads), fp16; 'GB' decimal."""
    assert L405.kv_cache_bytes_per_token("fp16") == 504 * KIB == 516_096
    assert L405.kv_cache_bytes(100_000, dtype="fp16") / 1e9 == pytest.approx(51.6, rel=0.01)


def test_seed_prefill_at_100k_tokens():
    """Assumption: full N^2 attention (4*L*N^2*d), linear 2*N*P with P = 405e9, bytes = fp16
    weights read once + the GQA KV cache written; activations not counted."""
    n = 100_000
    phase = prefill(L405, H100, n, causal=False)
    attention = _attention_flops(L405, n)
    assert phase.flops - attention == pytest.approx(8.1e16, rel=SEED_TOLERANCE)
    assert attention == pytest.approx(8.26e16, rel=SEED_TOLERANCE)
    assert phase.flops == pytest.approx(1.64e17, rel=SEED_TOLERANCE)
    assert phase.bytes_ == pytest.approx(861.6e9, rel=SEED_TOLERANCE)
    assert phase.intensity == pytest.approx(190_000, rel=SEED_TOLERANCE)
    assert phase.bound == "compute"


def test_seed_decode_step_at_100k_context():
    """Assumption: one token, linear 2*P, attention 4*L*N*d over the whole context, bytes = fp16
    weights + the GQA KV cache read."""
    n = 100_000
    phase = decode_step(L405, H100, n)
    attention = L405.num_layers * ops.decode_attention(1, 128, 8, n, 128).flops
    assert phase.flops - attention == pytest.approx(8.1e11, rel=SEED_TOLERANCE)
    assert attention == pytest.approx(8.25e11, rel=SEED_TOLERANCE)
    assert phase.flops == pytest.approx(1.635e12, rel=SEED_TOLERANCE)
    assert phase.bytes_ == pytest.approx(861.6e9, rel=SEED_TOLERANCE)
    assert phase.intensity == pytest.approx(1.9, rel=SEED_TOLERANCE)
    assert phase.bound == "memory"


def test_chapter4_metrics_follow_from_ttft_and_tbt():
    """TPS = 1/TBT; latency = TTFT + (generated - 1) * TBT; throughput = batch / TBT."""
    p = predict(MODELS["llama3-8b"], H100, prompt_tokens=2048, batch=4, generate=100)
    assert p.ttft_s == p.prefill.time_s and p.tbt_s == p.decode.time_s
    assert p.tps == pytest.approx(1 / p.tbt_s)
    assert p.latency_s == pytest.approx(p.ttft_s + 99 * p.tbt_s)
    assert p.throughput_tokens_per_s == pytest.approx(4 / p.tbt_s)


@settings(max_examples=30)
@given(context=st.integers(1, 1 << 17), batch=st.integers(1, 128))
def test_batching_shares_weights_but_not_kv_caches(context, batch):
    """Doubling the batch raises throughput (weights shared) and never shortens TBT."""
    model = MODELS["llama3-8b"]
    one = predict(model, H100, prompt_tokens=context, batch=batch)
    two = predict(model, H100, prompt_tokens=context, batch=2 * batch)
    assert two.tbt_s >= one.tbt_s
    assert two.throughput_tokens_per_s > one.throughput_tokens_per_s
    kv_growth = two.decode.bytes_ - one.decode.bytes_
    assert kv_growth == model.kv_cache_bytes(context + 1, batch)


def test_naive_steps_grow_quadratically_cached_steps_linearly():
    model = MODELS["llama3-8b"]
    n, m = 4096, 65536
    naive_ratio = naive_step(model, H100, m).flops / naive_step(model, H100, n).flops
    cached_ratio = decode_step(model, H100, m).flops / decode_step(model, H100, n).flops
    assert naive_ratio > m / n  # the attention part is quadratic
    assert cached_ratio < m / n  # the weight part does not grow at all


def test_causal_is_the_default_and_counts_fewer_flops_than_full():
    model = MODELS["llama3-8b"]
    assert prefill(model, H100, 8192).flops < prefill(model, H100, 8192, causal=False).flops


def test_mha_variants_keep_every_query_head_for_kv():
    for name in ("llama3-8b", "llama3-70b", "llama3-405b"):
        gqa, mha = MODELS[name], MODELS[f"{name}-mha"]
        assert mha.num_kv_heads == mha.num_heads == gqa.num_heads
        ratio = gqa.num_heads // gqa.num_kv_heads
        assert mha.kv_cache_bytes_per_token() == ratio * gqa.kv_cache_bytes_per_token()


def test_hf_config_json_round_trip(tmp_path):
    m = MODELS["llama3-8b"]
    config = {
        "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "head_dim": 128,
        "tie_word_embeddings": False,
        "attention_bias": False,
    }
    path = tmp_path / "llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    loaded = load_model(str(path))
    assert loaded.params == m.params
    assert dataclasses.replace(loaded, name=m.name) == m


def test_hf_config_defaults_tied_embeddings_and_biases():
    base = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 100,
    }
    plain = from_hf_config(base)
    assert plain.num_kv_heads == 4 and plain.head_dim == 16
    tied = from_hf_config({**base, "tie_word_embeddings": True})
    assert plain.params - tied.params == 100 * 64
    biased = from_hf_config({**base, "attention_bias": True})
    assert biased.params - plain.params == 2 * (64 + 64 + 64 + 64)  # q, k, v, o biases x 2 layers


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hidden_size": 64}', "lacks"),
        (
            '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, '
            '"num_key_value_heads": 3, "intermediate_size": 8, "vocab_size": 10}',
            "not a multiple",
        ),
    ],
)
def test_bad_config_json_is_refused_with_a_message(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_model(str(path))


def test_unknown_model_lists_the_built_in_ones():
    with pytest.raises(KeyError, match="llama3-8b"):
        load_model("gpt-17")


def test_reducing_depth_scales_layer_costs_only():
    full, cut = MODELS["llama3-70b"], MODELS["llama3-70b"].with_layers(20)
    per_layer = (full.params - cut.params) / 60
    assert per_layer == full.layer_params()


def test_the_matrices_a_norm_feeds_are_qkv_gate_up_and_the_lm_head():
    model = MODELS["llama3-8b"]  # by hand: (6144 + 2 * 14336) * 4096 a layer, 128256 * 4096
    assert model.norm_fed_params() == 32 * (6144 + 28672) * 4096 + 128256 * 4096


def test_the_decode_floor_is_the_steps_bytes_at_the_read_roof():
    model = MODELS["llama3-8b"]
    floor = decode_floor_s(model, 512, 1, 4.0e12)
    # Llama 3 8B in bf16 at batch 1: ~16 GB of weights (embedding table not read) dominate.
    weights = model.weights_read_bytes("bf16")
    kv = 2 * 32 * 8 * 128 * 2 * 513
    assert floor == pytest.approx((weights + kv) / 4.0e12)
    assert decode_step(model, H100, 512).bytes_ == pytest.approx(floor * 4.0e12)
    assert decode_floor_s(model, 512, 16, 4.0e12) > floor  # 16 caches, the same weights
    with pytest.raises(ValueError, match="positive"):
        decode_floor_s(model, 512, 1, 0.0)


@pytest.mark.parametrize(
    "name,params,head_dim,group", [("qwen2-0.5b", 0.494e9, 64, 7), ("phi3-mini", 3.821e9, 96, 1)]
)
def test_the_built_in_non_llama_configs_have_their_published_sizes(name, params, head_dim, group):
    # Qwen2-0.5B and Phi-3-mini as published: 0.49B and 3.8B parameters.
    model = load_model(name)
    assert model.name == name and model.params == pytest.approx(params, rel=2e-3)
    assert model.head_dim == head_dim and model.num_heads // model.num_kv_heads == group
    assert model.has_qkv_bias == (name == "qwen2-0.5b")
    with pytest.raises(KeyError, match="qwen2-0.5b"):
        load_model("no-such-model")  # the error lists them among the built-ins
