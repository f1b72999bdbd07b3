"""Whole-model costs of a Llama-shaped decoder: prefill, decode step, naive step; TTFT, TBT, TPS.

A layer is: RMSNorm, QKV projection, attention (GQA), O projection, RMSNorm, SwiGLU MLP
(gate and up projections, down projection); the model ends in a norm and an LM head.

Phase costs follow the worked figures of "Why LLM Inference is So Difficult" (chapters 4-8):

- FLOPs are the sum of the op costs in `theory.ops`: every projection is a GEMM (2*tokens*params)
  and attention is counted exactly (causal pairs by default; the full N^2 when `causal=False`,
  the convention the worked figures use). Logits are computed for the last token of each
  sequence only, as a serving engine does for the first token.
- Bytes are the compulsory HBM traffic of the phase: the weights once (every layer, the final
  norm and the LM head matrix), plus the KV cache: written for the prompt in prefill, read for
  the context (and the new token written) in decode. Activations are left out, as the worked
  figures leave them out.
- Time is that cost on a roof (`theory.roofline`): one launch floor + max(compute, memory).

Metrics (chapter 4): TTFT = prefill time; TBT = decode-step time at the given context;
TPS = 1 / TBT; latency = TTFT + (generated - 1) * TBT; throughput = batch / TBT tokens per second
across the batch (rising with batch while TBT rises too: the throughput/latency trade-off).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from roofbench.theory import hf_config, ops
from roofbench.theory.ops import OpCost, dtype_bytes
from roofbench.theory.roofline import Roof


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a Llama-style decoder (field names follow Hugging Face's config.json)."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int = 0  # 0: hidden_size // num_heads
    tie_word_embeddings: bool = False  # the LM head is the embedding matrix (one copy)
    attention_bias: bool = False  # Llama's: a bias on the q, k, v and o projections
    mlp_bias: bool = False
    qkv_bias: bool = False  # Qwen2's: a bias on q, k and v only (o has none)
    # Numerics of the decoder (no cost depends on them): Llama 3's by default.
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        sizes = {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
        }
        for key, value in sizes.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"model {self.name}: {key} must be a positive integer, got {value}"
                )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model {self.name}: num_heads ({self.num_heads}) is not a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim == 0:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"model {self.name}: hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_heads ({self.num_heads}) and no head_dim is given"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        elif self.head_dim < 0:
            raise ValueError(f"model {self.name}: head_dim must be positive, got {self.head_dim}")

    # --- shapes of the projections, as (out_features, in_features) -------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """Weight shapes [N, K] (out, in features) of one layer's projections."""
        return {
            "q_proj": (self.q_dim, self.hidden_size),
            "k_proj": (self.kv_dim, self.hidden_size),
            "v_proj": (self.kv_dim, self.hidden_size),
            "o_proj": (self.hidden_size, self.q_dim),
            "gate_proj": (self.intermediate_size, self.hidden_size),
            "up_proj": (self.intermediate_size, self.hidden_size),
            "down_proj": (self.hidden_size, self.intermediate_size),
        }

    @property
    def has_qkv_bias(self) -> bool:
        """Whether q, k and v carry a bias (Llama's attention_bias or Qwen2's qkv bias)."""
        return self.attention_bias or self.qkv_bias

    # --- parameters ---------------------------------------------------------------------------
    def layer_params(self) -> int:
        """Parameters of one layer: projections, their biases if any, and the two norms."""
        params = sum(n * k for n, k in self.linear_shapes().values())
        if self.has_qkv_bias:
            params += self.q_dim + 2 * self.kv_dim
        if self.attention_bias:
            params += self.hidden_size  # o_proj's
        if self.mlp_bias:
            params += 2 * self.intermediate_size + self.hidden_size
        return params + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        """All parameters: layers, final norm, embedding and (unless tied) the LM head."""
        head = 0 if self.tie_word_embeddings else self.embedding_params
        return (
            self.num_layers * self.layer_params() + self.hidden_size + self.embedding_params + head
        )

    def weights_bytes(self, dtype: str = "bf16") -> int:
        """Memory the weights occupy."""
        return self.params * dtype_bytes(dtype)

    def norm_fed_params(self) -> int:
        """Parameters of the matrices an RMSNorm feeds: each layer's Q, K, V, gate and up
        projections, and the LM head [vocab, hidden] (what a copy with the norms' gains folded
        into it holds)."""
        shapes = self.linear_shapes()
        fed = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
        per_layer = sum(shapes[name][0] * shapes[name][1] for name in fed)
        return self.num_layers * per_layer + self.embedding_params

    def weights_read_bytes(self, dtype: str = "bf16") -> int:
        """Weights one forward pass must read: every layer, the final norm and the LM head matrix.

        The embedding table is only gathered row by row, so when it is not tied to the LM head it
        is not counted.
        """
        return (
            self.num_layers * self.layer_params() + self.hidden_size + self.embedding_params
        ) * (dtype_bytes(dtype))

    def kv_cache_bytes_per_token(self, dtype: str = "bf16") -> int:
        """K and V of one token over all layers: 2 * layers * kv_heads * head_dim * element size."""
        return 2 * self.num_layers * self.kv_dim * dtype_bytes(dtype)

    def kv_cache_bytes(self, tokens: int, batch: int = 1, dtype: str = "bf16") -> int:
        return batch * tokens * self.kv_cache_bytes_per_token(dtype)

    def with_mha(self) -> ModelConfig:
        """The same model with unshared attention: one KV head per query head."""
        return dataclasses.replace(self, name=f"{self.name}-mha", num_kv_heads=self.num_heads)

    def with_layers(self, num_layers: int) -> ModelConfig:
        """The same model cut (or grown) to `num_layers` layers, e.g. to fit one GPU."""
        return dataclasses.replace(self, name=f"{self.name}-{num_layers}l", num_layers=num_layers)


def _llama3(name: str, hidden: int, layers: int, heads: int, intermediate: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=8,
        intermediate_size=intermediate,
        vocab_size=128256,
        head_dim=128,
    )


# Llama 3 / 3.1 configurations as published with the models (config.json of each).
_BASE = {
    "llama3-8b": _llama3("llama3-8b", 4096, 32, 32, 14336),
    "llama3-70b": _llama3("llama3-70b", 8192, 80, 64, 28672),
    "llama3-405b": _llama3("llama3-405b", 16384, 126, 128, 53248),
}
MODELS: dict[str, ModelConfig] = {**_BASE, **{f"{k}-mha": m.with_mha() for k, m in _BASE.items()}}

# Two other Llama-family decoders, built from the fields of their published config.json: Qwen2
# 0.5B (under 1B parameters, where launches weigh most; q/k/v bias, tied embeddings, head_dim 64,
# a GQA group of 7) and Phi-3 mini 4k (head_dim 96, MHA). Random weights: the shapes are what
# the suite needs, and a GPU host here has no registry to fetch a config from.
HF_CONFIGS: dict[str, dict] = {
    "qwen2-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
    "phi3-mini": {
        "model_type": "phi3",
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32064,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
}


def from_hf_config(config: dict, name: str = "hf-model", where: str = "config.json") -> ModelConfig:
    """A ModelConfig from the fields of a Hugging Face `config.json` (a Llama-family decoder:
    `theory.hf_config` says which). ValueError, naming the field, for one it cannot build."""
    fields = hf_config.decoder_fields(config, where)
    given = config.get("_name_or_path")
    return ModelConfig(name=given if isinstance(given, str) and given else name, **fields)


def load_model(name_or_path: str) -> ModelConfig:
    """A built-in model by name (MODELS, or one of HF_CONFIGS), or a Hugging Face config.json
    by path."""
    if name_or_path in MODELS:
        return MODELS[name_or_path]
    if name_or_path in HF_CONFIGS:
        return from_hf_config(HF_CONFIGS[name_or_path], name=name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        try:
            config = json.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text (a config.json is JSON)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return from_hf_config(config, name=path.parent.name or path.stem, where=str(path))
    raise KeyError(
        f"unknown model {name_or_path!r} (built in: {', '.join([*MODELS, *HF_CONFIGS])}; "
        "or a config.json)"
    )


# --- phase costs -------------------------------------------------------------------------------


def _check_sizes(**sizes: int) -> None:
    for key, value in sizes.items():
        if value <= 0:
            raise ValueError(f"{key} must be positive, got {value}")


def layer_ops(
    model: ModelConfig, tokens: int, attention: OpCost, dtype: str = "bf16"
) -> dict[str, OpCost]:
    """The op costs of one layer for `tokens` rows through the projections, plus `attention`."""
    costs = {name: ops.gemm(tokens, n, k, dtype) for name, (n, k) in model.linear_shapes().items()}
    costs["attention"] = attention
    return costs


def lm_head(model: ModelConfig, rows: int, dtype: str = "bf16") -> OpCost:
    """Logits for `rows` tokens: a GEMM against the [vocab, hidden] head matrix."""
    return ops.gemm(rows, model.vocab_size, model.hidden_size, dtype)


@dataclass(frozen=True)
class Phase:
    """FLOPs and compulsory bytes of one phase of inference, and its time on a roof."""

    flops: float
    bytes_: float
    time_s: float
    bound: str

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes_


def _phase(flops: float, bytes_: float, roof: Roof) -> Phase:
    prediction = roof.predict(OpCost(flops, bytes_))
    return Phase(flops, bytes_, prediction.time_s, prediction.bound)


def prefill(
    model: ModelConfig,
    roof: Roof,
    prompt_tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    causal: bool = True,
) -> Phase:
    """All `prompt_tokens` of `batch` prompts at once: the time to the first token.

    flops = layers * (projections of batch*N rows + attention over N) + LM head for the last
    token of each prompt; bytes = weights read once + the KV cache of batch*N tokens written.
    """
    _check_sizes(prompt_tokens=prompt_tokens, batch=batch)
    attention = ops.prefill_attention(
        batch, model.num_heads, model.num_kv_heads, prompt_tokens, model.head_dim, causal, dtype
    )
    per_layer = layer_ops(model, batch * prompt_tokens, attention, dtype)
    flops = model.num_layers * sum(c.flops for c in per_layer.values())
    flops += lm_head(model, batch, dtype).flops
    bytes_ = model.weights_read_bytes(dtype) + model.kv_cache_bytes(prompt_tokens, batch, dtype)
    return _phase(flops, bytes_, roof)


def decode_step(
    model: ModelConfig, roof: Roof, context: int, batch: int = 1, dtype: str = "bf16"
) -> Phase:
    """One new token for each of `batch` sequences, each attending to `context` cached tokens.

    flops = layers * (projections of `batch` rows + attention over the context) + LM head;
    bytes = weights read once (shared by the batch) + each sequence's KV cache read + the new
    token's K and V written.
    """
    _check_sizes(context=context, batch=batch)
    attention = ops.decode_attention(
        batch, model.num_heads, model.num_kv_heads, context, model.head_dim, dtype
    )
    per_layer = layer_ops(model, batch, attention, dtype)
    flops = model.num_layers * sum(c.flops for c in per_layer.values())
    flops += lm_head(model, batch, dtype).flops
    return _phase(flops, decode_step_bytes(model, context, batch, dtype), roof)


def decode_step_bytes(model: ModelConfig, context: int, batch: int = 1, dtype: str = "bf16") -> int:
    """Bytes one decode step must move: the weights read once (shared by the batch), each
    sequence's KV cache of `context` tokens read and the new token's K and V written."""
    return model.weights_read_bytes(dtype) + model.kv_cache_bytes(context + 1, batch, dtype)


def decode_floor_s(
    model: ModelConfig, context: int, batch: int, read_bytes_per_s: float, dtype: str = "bf16"
) -> float:
    """The least time a decode step can take on a GPU whose streaming read reaches
    `read_bytes_per_s` (the calibrated read roof): t = decode_step_bytes / read_bytes_per_s.

    At small batch the bytes are the weights: a serving engine's decode step at batch 1 is
    judged by how close it comes to this floor (no launches, fixed costs or compute charged)."""
    if read_bytes_per_s <= 0:
        raise ValueError(f"read_bytes_per_s must be positive, got {read_bytes_per_s}")
    return decode_step_bytes(model, context, batch, dtype) / read_bytes_per_s


def naive_step(
    model: ModelConfig,
    roof: Roof,
    sequence: int,
    batch: int = 1,
    dtype: str = "bf16",
    causal: bool = True,
) -> Phase:
    """One new token without a KV cache: the whole `sequence` goes through the model again.

    flops = those of a prefill of `sequence` tokens (linear in N for the projections, quadratic
    for attention); bytes = the weights only, since nothing is cached.
    """
    full = prefill(model, roof, sequence, batch, dtype, causal)
    return _phase(full.flops, model.weights_read_bytes(dtype), roof)


@dataclass(frozen=True)
class InferencePrediction:
    """Everything `roofbench predict` reports for one request shape."""

    model: ModelConfig
    dtype: str
    batch: int
    prompt_tokens: int
    context: int
    generate: int
    causal: bool
    prefill: Phase
    decode: Phase

    @property
    def ttft_s(self) -> float:
        return self.prefill.time_s

    @property
    def tbt_s(self) -> float:
        return self.decode.time_s

    @property
    def tps(self) -> float:
        """Tokens per second of one sequence: 1 / TBT."""
        return 1.0 / self.tbt_s

    @property
    def latency_s(self) -> float:
        """TTFT + (generated - 1) * TBT."""
        return self.ttft_s + (self.generate - 1) * self.tbt_s

    @property
    def throughput_tokens_per_s(self) -> float:
        """Tokens per second across the batch while decoding: batch / TBT."""
        return self.batch / self.tbt_s

    @property
    def kv_cache_bytes_per_token(self) -> int:
        return self.model.kv_cache_bytes_per_token(self.dtype)


def predict(
    model: ModelConfig,
    roof: Roof,
    prompt_tokens: int,
    context: int | None = None,
    batch: int = 1,
    generate: int = 1,
    dtype: str = "bf16",
    causal: bool = True,
) -> InferencePrediction:
    """Prefill of the prompt and a decode step at `context` (default: the prompt length)."""
    _check_sizes(generate=generate)
    context = prompt_tokens if context is None else context
    return InferencePrediction(
        model=model,
        dtype=dtype,
        batch=batch,
        prompt_tokens=prompt_tokens,
        context=context,
        generate=generate,
        causal=causal,
        prefill=prefill(model, roof, prompt_tokens, batch, dtype, causal),
        decode=decode_step(model, roof, context, batch, dtype),
    )
