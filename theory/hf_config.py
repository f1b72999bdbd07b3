"""The fields of a Hugging Face `config.json` that a Llama-family decoder is built from, checked.

A Llama-family decoder is pre-norm RMSNorm, rotary position embeddings, grouped-query attention
and a SwiGLU MLP; these `model_type`s are that architecture in Hugging Face's transformers:

- `llama`, `mistral`: optional biases from `attention_bias` (q, k, v and o) and `mlp_bias`;
- `qwen2`: a bias on q, k and v, none on o (Qwen2Attention builds q/k/v_proj with bias=True
  and o_proj without), whatever `attention_bias` says;
- `phi3`: the Llama layout with Q|K|V and gate|up stored fused (the same shapes and costs).

A config without `model_type` is read as `llama`. Every check names the field it refuses, so a
config the decoder cannot build is one line. Left as they are: `rope_scaling` (it changes the
rotary angles, not any shape or cost) and sliding windows (attention covers the whole context).
"""

from __future__ import annotations

MODEL_TYPES = ("llama", "mistral", "qwen2", "phi3")
QKV_BIAS_TYPES = ("qwen2",)
# The MLP is SwiGLU: silu(gate) * up. transformers names silu "silu" (and "swish").
ACTIVATIONS = ("silu", "swish")
REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)
FLAGS = ("tie_word_embeddings", "attention_bias", "mlp_bias")


def _positive_int(config: dict, key: str, where: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key} must be a whole number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{where}: {key} must be positive, got {value}")
    return value


def _positive_number(config: dict, key: str, where: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def _flag(config: dict, key: str, where: str) -> bool | None:
    value = config.get(key)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _text(config: dict, key: str, where: str) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string, got {value!r}")
    return value


def decoder_fields(config: dict, where: str = "config.json") -> dict:
    """The keyword arguments of `theory.llm.ModelConfig` (all but `name`) for `config`, or
    ValueError naming the first field that is missing, of the wrong kind, inconsistent or not
    something this decoder builds. `where` starts each message (the file's name)."""
    missing = [key for key in REQUIRED if config.get(key) is None]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    model_type = _text(config, "model_type", where) or "llama"
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not a Llama-family decoder this project "
            f"builds (supported: {', '.join(MODEL_TYPES)})"
        )
    sizes = {
        key: _positive_int(config, key, where)
        for key in (*REQUIRED, "num_key_value_heads", "head_dim")
    }
    heads = sizes["num_attention_heads"]
    kv_heads = sizes["num_key_value_heads"] or heads
    if heads % kv_heads:
        raise ValueError(
            f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
            f"({kv_heads})"
        )
    head_dim = sizes["head_dim"]
    if head_dim is None:
        if sizes["hidden_size"] % heads:
            raise ValueError(
                f"{where}: hidden_size ({sizes['hidden_size']}) is not divisible by "
                f"num_attention_heads ({heads}) and no head_dim is given"
            )
        head_dim = sizes["hidden_size"] // heads
    if head_dim % 2:
        raise ValueError(
            f"{where}: head_dim {head_dim} is odd: rotary embeddings turn pairs of dimensions"
        )
    activation = _text(config, "hidden_act", where) or "silu"
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{where}: hidden_act {activation!r} is not supported (the MLP is SwiGLU: "
            f"{' or '.join(ACTIVATIONS)})"
        )
    rotary = _positive_number(config, "partial_rotary_factor", where)
    if rotary not in (None, 1.0):
        raise ValueError(
            f"{where}: partial_rotary_factor {rotary} is not supported (rotary embeddings turn "
            "the whole head)"
        )
    flags = {key: bool(_flag(config, key, where)) for key in FLAGS}
    fields = {
        "hidden_size": sizes["hidden_size"],
        "num_layers": sizes["num_hidden_layers"],
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "intermediate_size": sizes["intermediate_size"],
        "vocab_size": sizes["vocab_size"],
        "head_dim": head_dim,
        **flags,
        "qkv_bias": model_type in QKV_BIAS_TYPES,
    }
    for key in ("rope_theta", "rms_norm_eps"):
        value = _positive_number(config, key, where)
        if value is not None:
            fields[key] = value
    return fields
