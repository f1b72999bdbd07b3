"""theory/hf_config via theory/llm: Llama-family configs (Qwen2, Phi-3 shapes), their parameter
and weight bytes, and one line naming the field of a config the decoder cannot build."""

import json

import pytest

from roofbench.theory.llm import from_hf_config, load_model

# The shapes of Qwen2-0.5B and Phi-3-mini-4k as their config.json files give them.
QWEN2_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "use_sliding_window": False,
    "sliding_window": 32768,
}
PHI3_MINI = {
    "model_type": "phi3",
    "hidden_size": 3072,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 8192,
    "vocab_size": 32064,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
}


def test_qwen2_has_qkv_bias_tied_embeddings_and_its_published_size():
    qwen = from_hf_config(QWEN2_05B)
    assert qwen.head_dim == 64 and qwen.num_heads // qwen.num_kv_heads == 7
    assert qwen.qkv_bias and not qwen.attention_bias and qwen.tie_word_embeddings
    assert qwen.rope_theta == 1e6 and qwen.rms_norm_eps == 1e-6
    # The model card: 0.49B parameters (embedding counted once, it is the LM head too).
    assert qwen.params == pytest.approx(0.494e9, rel=0.002)
    untied = from_hf_config({**QWEN2_05B, "tie_word_embeddings": False})
    assert untied.params - qwen.params == 151936 * 896
    # q, k, v biases on each layer (not o): what separates it from a plain Llama config.
    plain = from_hf_config({**QWEN2_05B, "model_type": "llama"})
    assert qwen.params - plain.params == 24 * (896 + 2 * 2 * 64)


def test_a_tied_head_is_read_once_and_counted_once():
    qwen = from_hf_config(QWEN2_05B)
    assert qwen.weights_read_bytes() == qwen.weights_bytes()  # the table is the LM head
    phi = from_hf_config(PHI3_MINI)
    embedding_bytes = 32064 * 3072 * 2
    assert phi.weights_bytes() - phi.weights_read_bytes() == embedding_bytes  # only gathered


def test_phi3_is_mha_with_head_dim_96_and_its_published_size():
    phi = from_hf_config(PHI3_MINI)
    assert phi.head_dim == 96 and phi.num_kv_heads == phi.num_heads
    assert not (phi.qkv_bias or phi.attention_bias or phi.tie_word_embeddings)
    assert phi.params == pytest.approx(3.821e9, rel=0.002)  # the model card: 3.8B


def test_llama_attention_bias_covers_o_too():
    base = {**PHI3_MINI, "model_type": "llama", "num_hidden_layers": 1}
    biased = from_hf_config({**base, "attention_bias": True, "mlp_bias": True})
    extra = biased.params - from_hf_config(base).params
    assert extra == 4 * 3072 + 2 * 8192 + 3072  # q, k, v, o; gate, up; down


@pytest.mark.parametrize(
    "change,field",
    [
        ({"hidden_size": None}, "hidden_size"),
        ({"num_hidden_layers": "32"}, "num_hidden_layers"),
        ({"num_hidden_layers": 2.5}, "num_hidden_layers"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"vocab_size": True}, "vocab_size"),
        ({"num_key_value_heads": 5}, "num_key_value_heads"),
        ({"num_key_value_heads": -2}, "num_key_value_heads"),
        ({"num_attention_heads": 7, "num_key_value_heads": 7}, "no head_dim"),
        ({"head_dim": 15}, "head_dim"),
        ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act"),
        ({"model_type": "gemma"}, "model_type"),
        ({"model_type": 3}, "model_type"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
        ({"attention_bias": 1}, "attention_bias"),
        ({"rope_theta": -1}, "rope_theta"),
        ({"rms_norm_eps": "small"}, "rms_norm_eps"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ],
)
def test_a_config_the_decoder_cannot_build_names_the_field(tmp_path, change, field):
    path = tmp_path / "phi.json"
    path.write_text(json.dumps({**PHI3_MINI, **change}))
    with pytest.raises(ValueError) as err:
        load_model(str(path))
    message = str(err.value)
    assert field in message and str(path) in message and "\n" not in message


def test_a_config_without_model_type_is_read_as_llama():
    config = {k: v for k, v in PHI3_MINI.items() if k != "model_type"}
    assert from_hf_config(config).params == from_hf_config(PHI3_MINI).params
