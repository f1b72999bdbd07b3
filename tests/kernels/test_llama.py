"""kernels/llama.py: shapes, numerics against a plain implementation, the KV cache, backends."""

import dataclasses

import pytest
import torch

from roofbench.kernels.gemv_pack import unpack
from roofbench.kernels.llama import DecodeGraph, KVCache, Llama, workspace_bytes
from roofbench.theory.llm import ModelConfig

VOCAB = 97


def tiny(kv_heads: int = 2, layers: int = 2, **changes) -> ModelConfig:
    """hidden 64, 4 heads of 16, `kv_heads` KV heads (2: GQA, 4: MHA), vocab 97."""
    config = ModelConfig(
        name=f"tiny-kv{kv_heads}",
        hidden_size=64,
        num_layers=layers,
        num_heads=4,
        num_kv_heads=kv_heads,
        intermediate_size=96,
        vocab_size=VOCAB,
    )
    return dataclasses.replace(config, **changes)


def tokens(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def lens(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def close(a, b, tol=1e-4):
    a, b = a.float(), b.float()
    return (a - b).norm() <= tol * b.norm()


# --- shapes and weights ----------------------------------------------------------------------


def test_shapes_of_each_phase():
    model = Llama.random(tiny())
    cache = model.allocate_cache(3, 12)
    assert cache.kv.shape == (2, 2, 3, 2, 12, 16)  # layers, K|V, B, Hkv, S_max, D
    assert model.prefill(tokens(3, 8)).shape == (3, VOCAB)
    assert model.decode_step(tokens(3, 1), lens([8, 8, 8])).shape == (3, VOCAB)
    assert model.naive_step(tokens(3, 5)).shape == (3, VOCAB)
    assert model.dtype == torch.float32 and model.dtype_name == "fp32"


def test_fused_weight_shapes_follow_the_config():
    cfg = tiny()
    layer = Llama.random(cfg).weights.layers[0]
    assert layer.wqkv.shape == (cfg.q_dim + 2 * cfg.kv_dim, cfg.hidden_size)
    assert layer.wo.shape == (cfg.hidden_size, cfg.q_dim)
    assert layer.w_gate_up.shape == (2 * cfg.intermediate_size, cfg.hidden_size)
    assert layer.w_down.shape == (cfg.hidden_size, cfg.intermediate_size)
    params = sum(t.numel() for t in vars(layer).values() if t is not None)
    assert params == cfg.layer_params()  # the same parameters theory counts


def test_depth_follows_with_layers_and_weights_are_reproducible():
    cfg = tiny(layers=4)
    assert len(Llama.random(cfg.with_layers(1)).weights.layers) == 1
    a, b = Llama.random(cfg, seed=3), Llama.random(cfg, seed=3)
    assert torch.equal(a.weights.layers[3].w_down, b.weights.layers[3].w_down)


def test_activations_stay_order_one_through_depth():
    logits = Llama.random(tiny(layers=12)).prefill(tokens(2, 16))
    assert 0.3 < logits.std().item() < 3.0


def test_backends_share_weights_but_not_caches():
    torch_model = Llama.random(tiny())
    triton_model = torch_model.with_backend("triton")
    assert triton_model.weights.layers[0].wqkv is torch_model.weights.layers[0].wqkv
    torch_model.allocate_cache(1, 4)
    assert triton_model.cache is None


# --- numerics --------------------------------------------------------------------------------


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_prefill_matches_a_plain_implementation(kv_heads, decoder_reference):
    model = Llama.random(tiny(kv_heads))
    toks = tokens(2, 11)
    assert close(model.prefill(toks), decoder_reference(model.config, model.weights, toks)[:, -1])


def test_biases_and_tied_embeddings(decoder_reference):
    cfg = tiny(attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    model = Llama.random(cfg)
    assert model.weights.lm_head is model.weights.embed
    toks = tokens(2, 7)
    assert close(model.prefill(toks), decoder_reference(model.config, model.weights, toks)[:, -1])


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_cached_decode_equals_the_full_sequence(kv_heads, decoder_reference):
    """Each decode step's logits equal the plain model's at that position: the cache is right."""
    model = Llama.random(tiny(kv_heads))
    toks = tokens(2, 10)
    expected = decoder_reference(model.config, model.weights, toks)
    model.allocate_cache(2, 10)
    assert close(model.prefill(toks[:, :6]), expected[:, 5])
    context = lens([6, 6])
    for t in range(6, 10):
        assert close(model.decode_step(toks[:, t : t + 1], context), expected[:, t])
        context += 1  # the caller advances the lengths in place


def test_decode_with_ragged_lengths(decoder_reference):
    """Sequence 1 restarts 3 tokens earlier: it overwrites its cache there and attends to fewer."""
    model = Llama.random(tiny())
    toks = tokens(2, 9)
    model.allocate_cache(2, 9)
    model.prefill(toks[:, :8])
    logits = model.decode_step(toks[:, 8:9], lens([8, 5]))
    assert close(logits[0], decoder_reference(model.config, model.weights, toks[:1])[0, -1])
    shorter = torch.cat((toks[1:, :5], toks[1:, 8:9]), dim=1)
    assert close(logits[1], decoder_reference(model.config, model.weights, shorter)[0, -1])


def test_naive_step_is_a_prefill_whose_cache_is_not_kept():
    model = Llama.random(tiny())
    toks = tokens(2, 9)
    naive = model.naive_step(toks)
    assert model.cache is None
    assert torch.allclose(naive, model.prefill(toks), rtol=1e-5, atol=1e-5)


def test_triton_backend_matches_torch():
    """Under the interpreter (fp32): GEMM (M = 24 > 16) and GEMV (M = 1, 2) projections, flash
    prefill attention and split-KV decode attention, with a ragged decode."""
    torch_model = Llama.random(tiny(layers=1))
    triton_model = torch_model.with_backend("triton")
    toks = tokens(2, 13)
    for model in (torch_model, triton_model):
        model.allocate_cache(2, 13)
    assert close(triton_model.prefill(toks[:, :12]), torch_model.prefill(toks[:, :12]))
    context = lens([12, 7])
    step = toks[:, 12:13]
    assert close(triton_model.decode_step(step, context), torch_model.decode_step(step, context))
    one = toks[:1, :5]
    assert close(triton_model.naive_step(one), torch_model.naive_step(one))


# --- cache and errors --------------------------------------------------------------------------


def test_prefill_allocates_a_cache_when_none_fits():
    model = Llama.random(tiny())
    model.prefill(tokens(2, 5))
    assert model.cache.batch == 2 and model.cache.max_seq == 5
    model.allocate_cache(2, 16)
    model.prefill(tokens(2, 5))
    assert model.cache.max_seq == 16  # kept: it fits


def test_fill_random_writes_every_slot():
    cache = KVCache.allocate(tiny(), 2, 4, "cpu", torch.float32).fill_random_(seed=1)
    assert (cache.kv != 0).all() and cache.nbytes == cache.kv.numel() * 4


def test_workspace_grows_with_tokens():
    cfg = tiny()
    assert workspace_bytes(cfg, 2048, 0) == 2 * workspace_bytes(cfg, 1024, 0) > 0


def test_bad_calls_are_refused():
    model = Llama.random(tiny())
    with pytest.raises(ValueError, match="backend"):
        model.with_backend("cuda")
    with pytest.raises(ValueError, match="cache"):
        model.decode_step(tokens(1, 1), lens([0]))
    model.allocate_cache(1, 4)
    with pytest.raises(ValueError, match="int32"):
        model.decode_step(tokens(1, 1), torch.tensor([0]))
    with pytest.raises(ValueError, match="one token"):
        model.decode_step(tokens(1, 2), lens([0]))


@pytest.mark.gpu
def test_decode_graph_replays_the_eager_step():
    for backend in ("triton", "torch"):
        model = Llama.random(tiny(), backend=backend, device="cuda", seed=2)
        toks = tokens(2, 9).cuda()
        model.allocate_cache(2, 16)
        model.prefill(toks[:, :8])
        context = lens([8, 8]).cuda()
        eager = model.decode_step(toks[:, 8:9], context).clone()
        graph = DecodeGraph(model, toks[:, 8:9], context)
        assert torch.equal(graph.step(advance=True), eager)
        assert graph.context_lens.tolist() == [9, 9]


@pytest.mark.parametrize("head_dim,heads,kv_heads", [(96, 7, 1), (80, 4, 2)])
def test_triton_backend_matches_torch_at_odd_head_dims_and_groups(head_dim, heads, kv_heads):
    """A Phi-3-like head_dim (96) with a group of 7, and 80: the decoder runs on our kernels."""
    config = ModelConfig(
        name="odd", hidden_size=128, num_layers=1, num_heads=heads, num_kv_heads=kv_heads,
        intermediate_size=96, vocab_size=97, head_dim=head_dim,
    )  # fmt: skip
    reference = Llama.random(config, "torch", seed=3)
    ours = reference.with_backend("triton")
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    expected, got = reference.prefill(tokens), ours.prefill(tokens)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3)
    lens = torch.full((2,), 9, dtype=torch.int32)
    reference.allocate_cache(2, 16)
    ours.allocate_cache(2, 16)
    reference.prefill(tokens)
    ours.prefill(tokens)
    step = torch.randint(0, 97, (2, 1), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ours.decode_step(step, lens), reference.decode_step(step, lens),
                          rtol=1e-3, atol=1e-3)  # fmt: skip


# --- the fused backend -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [tiny(2, layers=2), tiny(4, layers=1, attention_bias=True, tie_word_embeddings=True)],
    ids=["gqa", "mha_bias_tied"],
)
@pytest.mark.parametrize("backend", ["fused", "fused-folded"])
def test_fused_backend_matches_torch(config, backend):
    """Under the interpreter (fp32): prefill (GEMM rows), a ragged decode step at positions 12
    and 7, and a naive step; the fused kernels in place of torch's element-wise ones (and on
    "fused-folded" the norms' gains in packed copies of the weights, the shared ones
    untouched)."""
    torch_model = Llama.random(config, seed=5)
    wqkv = torch_model.weights.layers[0].wqkv.clone()
    fused = torch_model.with_backend(backend)
    assert fused._fused and not torch_model._fused
    assert (fused._folded is not None) == (backend == "fused-folded")
    if fused._folded is not None:
        assert torch.equal(torch_model.weights.layers[0].wqkv, wqkv)
        # packed copies (`kernels.gemv_pack`): QKV's with the gain folded in, O's as it is
        assert not torch.equal(unpack(fused._folded.qkv[0]), wqkv)
        assert torch.equal(unpack(fused._folded.wo[0]), torch_model.weights.layers[0].wo)
    toks = tokens(2, 13, seed=4)
    for model in (torch_model, fused):
        model.allocate_cache(2, 13)
    assert close(fused.prefill(toks[:, :12]), torch_model.prefill(toks[:, :12]))
    assert torch.allclose(fused.cache.kv[:, :, :, :, :12], torch_model.cache.kv[:, :, :, :, :12],
                          rtol=1e-4, atol=1e-4)  # fmt: skip
    context = lens([12, 7])
    step = toks[:, 12:13]
    assert close(fused.decode_step(step, context), torch_model.decode_step(step, context))
    assert context.tolist() == [12, 7]  # the lengths are left to the caller
    one = toks[:1, :5]
    assert close(fused.naive_step(one), torch_model.naive_step(one))


def test_fused_cached_decode_equals_the_full_sequence(decoder_reference):
    model = Llama.random(tiny(), "fused", seed=1)
    toks = tokens(3, 9, seed=2)
    expected = decoder_reference(model.config, model.weights, toks)
    model.allocate_cache(3, 9)
    assert close(model.prefill(toks[:, :6]), expected[:, 5])
    context = lens([6, 6, 6])
    for t in range(6, 9):
        assert close(model.decode_step(toks[:, t : t + 1], context), expected[:, t])
        context += 1


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["fused", "fused-folded"])
def test_fused_backend_decode_graph_replays_the_eager_step(backend):
    model = Llama.random(tiny(), backend=backend, device="cuda", seed=2)
    toks = tokens(2, 9).cuda()
    model.allocate_cache(2, 16)
    model.prefill(toks[:, :8])
    context = lens([8, 6]).cuda()
    eager = model.decode_step(toks[:, 8:9], context).clone()
    graph = DecodeGraph(model, toks[:, 8:9], context)
    assert torch.equal(graph.step(advance=True), eager)
    assert graph.context_lens.tolist() == [9, 7]
    # The next replay reads the advanced lengths from the device: the next position.
    model_eager = model.with_backend(backend)
    model_eager.cache = model.cache
    expected = model_eager.decode_step(toks[:, 8:9], graph.context_lens.clone()).clone()
    model.cache.kv[:, :, 0, :, 9] = float("nan")  # what the replay must overwrite, not read
    model.cache.kv[:, :, 1, :, 7] = float("nan")
    assert torch.allclose(graph.step(advance=False), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["fused", "fused-folded"])
def test_fused_backend_matches_torch_in_bf16_at_llama3_8b_width(backend):
    from roofbench.theory.llm import MODELS

    config = MODELS["llama3-8b"].with_layers(2)
    reference = Llama.random(config, "torch", "cuda", torch.bfloat16, seed=3)
    fused = reference.with_backend(backend)
    toks = torch.randint(0, config.vocab_size, (4, 65), device="cuda")
    for model in (reference, fused):
        model.allocate_cache(4, 80)
    assert close(fused.prefill(toks[:, :64]), reference.prefill(toks[:, :64]), tol=3e-2)
    context = torch.tensor([64, 64, 30, 1], dtype=torch.int32, device="cuda")
    step = toks[:, 64:65]
    got, expected = fused.decode_step(step, context), reference.decode_step(step, context)
    assert close(got, expected, tol=3e-2)
