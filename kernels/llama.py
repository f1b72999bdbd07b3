"""A Llama-shaped decoder with random weights, run on this project's kernels or on torch's.

The model is the one `theory.llm` costs: per layer RMSNorm, a QKV projection, rotary position
embeddings, grouped-query attention over a KV cache, an O projection, RMSNorm and a SwiGLU MLP
(gate and up projections, down projection); then a final RMSNorm and the LM head. Any
`theory.llm.ModelConfig` works (`config.with_layers(n)` cuts the depth, `config.with_mha()` gives
every query head its own KV head). The weights are random (nothing is downloaded), each matrix
drawn from N(0, 1/fan_in) so activations stay O(1) through any depth; embeddings are N(0, 1).

Projections sharing an input are stored fused (Q|K|V as one [q + 2 kv, hidden] matrix, gate|up as
one [2 intermediate, hidden] matrix), as serving engines store them: the same weights and FLOPs
in fewer, larger products. Norms, rotary embeddings and SiLU run in torch on the "triton" and
"torch" backends; the "fused" backend runs them in `kernels.fused` (below).

Backends (`backend=`): a choice of registered implementation (`kernels.registry`) for each of
the four ops the decoder runs: `gemv` for projections of at most 16 token rows (decode), `gemm`
above, `prefill_attention` and `decode_attention`. Presets: "triton" (this project's kernels for
all four) and "torch" (F.linear, SDPA: the baselines); or a mapping such as
{"decode_attention": "mine", "gemm": "triton"}, where an op left out takes its baseline. The
decoder calls an implementation without `out=` (it must then return a fresh result) and gives
decode attention the lengths as an int32 device tensor, so that a step can be graph-captured.

"fused" is "triton" for the four ops with the element-wise work fused as serving engines fuse it
(`kernels.fused`, `kernels.fused_step`): on the GEMV the norms, biases, SiLU x up and residual
adds in the projections' epilogues, on the GEMM each residual add with the RMSNorm after it; the
rotary of Q and K with the cache writes. "fused-folded" is "fused" with the norms' gains folded
into copies of the weights and every GEMV weight packed in its tiles (`kernels.gemv_pack`,
`kernels.fused_step.FoldedGains`), as engines prepare weights once at load time; "compile" is
"torch" with its phases compiled by torch.compile (`kernels.llama_compiled`).

Rotary embeddings use the config's rope_theta (Llama 3's 500000 by default) and rotate-half
pairing (dimension i with i + D/2, the Hugging Face layout), RMSNorm its rms_norm_eps; long-context
frequency scaling (`rope_scaling`) is not applied. Biases follow the config: Llama's
`attention_bias` on q, k, v and o, Qwen2's on q, k and v only, `mlp_bias` on the MLP. With
`tie_word_embeddings` the LM head is the embedding matrix itself.

Phases (each returns the logits of each sequence's newest token, [B, vocab]):
- `prefill(tokens [B, N])`: positions 0..N-1, K and V written to the cache.
- `decode_step(tokens [B, 1], context_lens)`: sequence b holds context_lens[b] cached tokens;
  the new token goes at that position, is written there and attends over context_lens[b] + 1
  positions. The lengths are an int32 device tensor the caller updates in place (the model never
  changes them); nothing reads them on the host, so the step can be captured in a CUDA graph
  (`DecodeGraph`). The caller keeps context_lens[b] < the cache's max_seq.
- `naive_step(tokens [B, N])`: the same forward as prefill with no cache kept (recomputation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from roofbench.theory.llm import ModelConfig
from roofbench.theory.ops import dtype_bytes

from . import catalog, fused_step, llama_compiled
from .gemv import TOKENS_PER_DOT
from .llama_weights import LayerWeights, Weights, random_weights

ROPE_THETA = ModelConfig.rope_theta  # Llama 3's rope_theta (config.json), the default
RMS_EPS = ModelConfig.rms_norm_eps  # Llama 3's rms_norm_eps, the default
GEMV_MAX_M = TOKENS_PER_DOT  # the GEMV op serves 1..16 token rows; above, the GEMM
PRESETS = ("triton", "torch")  # one implementation for every op; a model run's default
FUSED = "fused"  # "triton" for every op, and the decoder's element-wise work fused
FOLDED = "fused-folded"  # "fused" with the norms' gains folded into copies of the weights
COMPILE = llama_compiled.COMPILE  # "torch" for every op, its phases compiled by torch.compile
BACKENDS = (*PRESETS, FUSED, FOLDED, COMPILE)
MODEL_OPS = ("gemm", "gemv", "prefill_attention", "decode_attention")


def resolve_backend(backend: str | Mapping[str, str]) -> dict[str, str]:
    """op -> implementation name for a preset ("triton", "torch"; "fused" runs "triton") or a
    per-op mapping (ops left out take their baseline). Raises ValueError naming what is unknown."""
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or op=impl, got {backend!r}")
        runs = {FUSED: "triton", FOLDED: "triton", COMPILE: "torch"}
        names = dict.fromkeys(MODEL_OPS, runs.get(backend, backend))
    else:
        wrong = [op for op in backend if op not in MODEL_OPS]
        if wrong:
            raise ValueError(f"the decoder runs {', '.join(MODEL_OPS)}; not {', '.join(wrong)}")
        names = {op: backend.get(op) or catalog.baseline(op).name for op in MODEL_OPS}
    for op, name in names.items():
        try:
            catalog.get_impl(op, name)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
    return names


def backend_label(backend: str | Mapping[str, str]) -> str:
    """A preset's name, or the per-op choices as `op=impl,...` in the decoder's op order."""
    if isinstance(backend, str):
        return backend
    return ",".join(f"{op}={backend[op]}" for op in MODEL_OPS if op in backend)


def parse_backend(label: str) -> str | dict[str, str]:
    """The inverse of `backend_label`."""
    if "=" not in label:
        return label
    pairs = [part.split("=", 1) for part in label.split(",") if part]
    return {op.strip(): name.strip() for op, name in pairs}


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


# --- pieces shared by both backends ------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension: torch's rms_norm, which
    takes the statistics in fp32 for fp16/bf16 inputs (one fused kernel where torch has it)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rope_tables(
    head_dim: int,
    positions: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    theta: float = ROPE_THETA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [positions, head_dim / 2] of angle p * theta^(-2i / head_dim), computed in
    fp64 and stored in `dtype` (the model's, as Hugging Face's Llama does)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim
    inv_freq = theta**-exponents
    pos = torch.arange(positions, device=device, dtype=torch.float64)
    angles = torch.outer(pos, inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x [B, T, heads, D] by the angles of cos, sin [B|1, T, 1, D/2]:

    out_i = x_i cos - x_{i+D/2} sin;  out_{i+D/2} = x_{i+D/2} cos + x_i sin.

    Q and K go through together (one set of kernels for both: in a decode step each elementwise
    kernel costs a few microseconds of launch, like a whole small GEMV).
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    first = torch.addcmul(x1 * cos, x2, sin, value=-1)
    second = torch.addcmul(x2 * cos, x1, sin)
    return torch.cat((first, second), dim=-1)


def workspace_bytes(
    config: ModelConfig, tokens: int, sequences: int = 1, dtype: str = "bf16"
) -> int:
    """An upper estimate of the transient memory of one forward over `tokens` rows of
    `sequences` sequences (not a cost; used only to skip shapes that cannot fit).

    Per token, the residual stream (hidden) plus the largest of: the MLP (normed input, gate|up,
    SiLU, product: hidden + 4 intermediate), attention (QKV, rotary temporaries and result,
    output and its transposed copy: 5 q_dim + 4 kv_dim) and RMSNorm (up to three fp32 copies
    of a row when torch has no fused kernel, plus its output); and fp32 logits per sequence.
    """
    elt = dtype_bytes(dtype)
    h, q, kv = config.hidden_size, config.q_dim, config.kv_dim
    mlp = elt * (h + 4 * config.intermediate_size)
    attn = elt * (5 * q + 4 * kv)
    norm = 4 * 3 * h + elt * h
    return tokens * (elt * h + max(mlp, attn, norm)) + sequences * config.vocab_size * 4


# --- KV cache ----------------------------------------------------------------------------------


@dataclass
class KVCache:
    """K and V of every layer, [layers, 2, B, Hkv, max_seq, D], plus the step's static buffers.

    `positions` (int64) and `attend_lens` (int32) are rewritten in place by each decode step, so
    a captured step reads only tensors that outlive it. `cos`, `sin` are the rotary tables for
    max_seq positions.
    """

    kv: torch.Tensor
    positions: torch.Tensor
    attend_lens: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def allocate(
        cls, config: ModelConfig, batch: int, max_seq: int, device, dtype: torch.dtype
    ) -> KVCache:
        if batch <= 0 or max_seq <= 0:
            raise ValueError(f"batch and max_seq must be positive, got {batch}, {max_seq}")
        shape = (config.num_layers, 2, batch, config.num_kv_heads, max_seq, config.head_dim)
        cos, sin = rope_tables(config.head_dim, max_seq, device, dtype, config.rope_theta)
        return cls(
            kv=torch.zeros(shape, device=device, dtype=dtype),
            positions=torch.zeros(batch, device=device, dtype=torch.int64),
            attend_lens=torch.ones(batch, device=device, dtype=torch.int32),
            cos=cos,
            sin=sin,
        )

    @property
    def batch(self) -> int:
        return self.kv.shape[2]

    @property
    def max_seq(self) -> int:
        return self.kv.shape[4]

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def k(self, layer: int) -> torch.Tensor:
        return self.kv[layer, 0]

    def v(self, layer: int) -> torch.Tensor:
        return self.kv[layer, 1]

    def fill_random_(self, seed: int = 0) -> KVCache:
        """Fill K and V with N(0, 1) values, standing in for a prefill of the whole context
        (a decode step reads the cache the same way whatever wrote it; zeros would run faster)."""
        gen = torch.Generator(device=self.kv.device).manual_seed(seed)
        self.kv.normal_(generator=gen)
        return self


# --- the model ---------------------------------------------------------------------------------


class Llama:
    """A decoder of shape `config` over `weights`, computing with `backend` (see the module)."""

    def __init__(
        self, config: ModelConfig, weights: Weights, backend: str | Mapping[str, str] = "torch"
    ):
        names = resolve_backend(backend)
        if len(weights.layers) != config.num_layers:
            raise ValueError(f"{len(weights.layers)} layers of weights for {config.name}")
        self.config, self.weights = config, weights
        self.backend = backend_label(backend)
        self.impl_names = names
        self._fn = {op: catalog.get_impl(op, name).fn for op, name in names.items()}
        # The fused backend's element-wise kernels, by name (none on the other backends).
        self._fused = dict(fused_step.KERNELS) if self.backend in (FUSED, FOLDED) else {}
        self._folded = fused_step.fold_gains(weights) if self.backend == FOLDED else None
        self._compiled = llama_compiled.Phases(self) if self.backend == COMPILE else None
        self.cache: KVCache | None = None
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def random(
        cls,
        config: ModelConfig,
        backend: str | Mapping[str, str] = "torch",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> Llama:
        """Random weights (`random_weights`); dtype defaults to bf16 on a GPU, fp32 on the CPU."""
        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return cls(config, random_weights(config, device, dtype, seed), backend)

    def with_backend(self, backend: str | Mapping[str, str]) -> Llama:
        """The same weights (shared, not copied) on another backend, with a cache of its own."""
        return Llama(self.config, self.weights, backend)

    @property
    def device(self) -> torch.device:
        return self.weights.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.embed.dtype

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES[self.dtype]

    def allocate_cache(self, batch: int, max_seq: int) -> KVCache:
        """A fresh cache for `batch` sequences of up to `max_seq` tokens (the old one is dropped
        first, so both never hold memory at once)."""
        self.cache = None
        self.cache = KVCache.allocate(self.config, batch, max_seq, self.device, self.dtype)
        return self.cache

    def free_cache(self) -> None:
        self.cache = None

    # --- phases --------------------------------------------------------------------------------

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, vocab] of each prompt's last token; K and V of all N tokens go to the cache.

        Uses the current cache when it has B sequences and room for N tokens, else allocates one
        of exactly N positions (call `allocate_cache(B, max_seq)` first to leave room to decode).
        """
        batch, n = self._check_tokens(tokens)
        cache = self.cache
        if cache is None or cache.batch != batch or cache.max_seq < n:
            cache = self.allocate_cache(batch, n)
        return self._forward(tokens, cache, cache.cos[:n], cache.sin[:n])

    @torch.no_grad()
    def naive_step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, vocab] of the last token, recomputing the whole sequence: no cache is read
        or written."""
        _, n = self._check_tokens(tokens)
        cos, sin = self._rope_tables(n)
        return self._forward(tokens, None, cos, sin)

    @torch.no_grad()
    def decode_step(self, tokens: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
        """Logits [B, vocab] of one new token per sequence, appended to the cache at position
        context_lens[b] (int32 [B] on the model's device, left unchanged)."""
        batch, n = self._check_tokens(tokens)
        cache = self.cache
        if n != 1:
            raise ValueError(f"decode_step takes one token per sequence, got {n}")
        if cache is None or cache.batch != batch:
            raise ValueError(f"decode_step needs a cache for {batch} sequences: call prefill first")
        if tuple(context_lens.shape) != (batch,) or context_lens.dtype != torch.int32:
            raise ValueError("context_lens must be an int32 tensor [B]")
        if self._fused or self._compiled:  # kernels.fused_step's step, or torch.compile's
            return (self._compiled or fused_step).decode_step(self, tokens, context_lens)
        cfg, w = self.config, self.weights
        eps = cfg.rms_norm_eps
        cache.positions.copy_(context_lens)
        torch.add(context_lens, 1, out=cache.attend_lens)
        cos = cache.cos.index_select(0, cache.positions)[:, None, None, :]
        sin = cache.sin.index_select(0, cache.positions)[:, None, None, :]
        slot = cache.positions.view(batch, 1, 1, 1).expand(batch, cfg.num_kv_heads, 1, cfg.head_dim)
        x = F.embedding(tokens.reshape(batch), w.embed)  # [B, hidden]
        for i, layer in enumerate(w.layers):
            q, k, v = self._qkv(rms_norm(x, layer.attn_norm, eps), layer, batch, 1, cos, sin)
            k_cache, v_cache = cache.k(i), cache.v(i)
            k_cache.scatter_(2, slot, k[:, 0].unsqueeze(2))
            v_cache.scatter_(2, slot, v[:, 0].unsqueeze(2))
            o = self._fn["decode_attention"](q[:, 0], k_cache, v_cache, cache.attend_lens)
            x = x + self._linear(o.reshape(batch, cfg.q_dim), layer.wo, layer.bo)
            x = x + self._mlp(rms_norm(x, layer.mlp_norm, eps), layer)
        return self._logits(x)

    # --- the forward pieces --------------------------------------------------------------------

    def _check_tokens(self, tokens: torch.Tensor) -> tuple[int, int]:
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be [B, N] with B, N >= 1, got {tuple(tokens.shape)}")
        return tokens.shape[0], tokens.shape[1]

    def _rope_tables(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n not in self._rope:
            cfg = self.config
            self._rope[n] = rope_tables(cfg.head_dim, n, self.device, self.dtype, cfg.rope_theta)
        return self._rope[n]

    def _forward(self, tokens, cache: KVCache | None, cos, sin) -> torch.Tensor:
        """All N positions of each sequence at once (causal), caching K and V if `cache`."""
        if self._fused or self._compiled:
            return (self._compiled or fused_step).forward(self, tokens, cache, cos, sin)
        batch, n = tokens.shape
        cfg, w = self.config, self.weights
        eps = cfg.rms_norm_eps
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        x = F.embedding(tokens.reshape(-1), w.embed)  # [B*N, hidden]
        for i, layer in enumerate(w.layers):
            q, k, v = self._qkv(rms_norm(x, layer.attn_norm, eps), layer, batch, n, cos, sin)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, N, D]
            if cache is not None:
                cache.k(i)[:, :, :n].copy_(k)
                cache.v(i)[:, :, :n].copy_(v)
            o = self._fn["prefill_attention"](q, k, v, causal=True)  # [B, Hq, N, D]
            o = o.transpose(1, 2).reshape(batch * n, cfg.q_dim)
            x = x + self._linear(o, layer.wo, layer.bo)
            x = x + self._mlp(rms_norm(x, layer.mlp_norm, eps), layer)
        # Logits for each sequence's last token only, as a server does for the first token.
        return self._logits(x.view(batch, n, -1)[:, -1])

    def _qkv(self, h, layer: LayerWeights, batch: int, n: int, cos, sin):
        """Q [B, N, Hq, D] and K [B, N, Hkv, D] rotated, V [B, N, Hkv, D], from normed h."""
        cfg = self.config
        heads = cfg.num_heads + cfg.num_kv_heads
        qkv = self._linear(h, layer.wqkv, layer.bqkv)
        qk = qkv[:, : cfg.q_dim + cfg.kv_dim].reshape(batch, n, heads, cfg.head_dim)
        q, k = apply_rope(qk, cos, sin).split([cfg.num_heads, cfg.num_kv_heads], dim=2)
        v = qkv[:, cfg.q_dim + cfg.kv_dim :].reshape(batch, n, cfg.num_kv_heads, cfg.head_dim)
        return q, k, v

    def _mlp(self, h: torch.Tensor, layer: LayerWeights) -> torch.Tensor:
        """SwiGLU: down(silu(gate(h)) * up(h))."""
        gate, up = self._linear(h, layer.w_gate_up, layer.b_gate_up).chunk(2, dim=-1)
        return self._linear(F.silu(gate) * up, layer.w_down, layer.b_down)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.config.rms_norm_eps
        return self._linear(rms_norm(x, self.weights.norm, eps), self.weights.lm_head)

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
        """x [M, K] @ w[N, K]^T (+ b): the GEMV op's implementation up to 16 rows, else GEMM's."""
        op = "gemv" if x.shape[0] <= GEMV_MAX_M else "gemm"
        y = self._fn[op](x.contiguous(), w)
        return y if b is None else y.add_(b)


# --- CUDA-graph decode ---------------------------------------------------------------------------


class DecodeGraph:
    """One `decode_step` captured in a CUDA graph over static token and length buffers.

    `step(tokens)` copies the tokens in, replays the graph and returns the static logits buffer;
    with `advance` it then adds 1 to every length in place (outside the graph, so `replay()`
    can repeat one step, as timing does). The step runs eagerly `warmup` times on a side stream
    first (Triton compilation and autotuning must not be captured), as torch's graph notes say.
    """

    def __init__(
        self, model: Llama, tokens: torch.Tensor, context_lens: torch.Tensor, warmup: int = 2
    ):
        self.model = model
        self.tokens = tokens.clone()
        self.context_lens = context_lens.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                model.decode_step(self.tokens, self.context_lens)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.decode_step(self.tokens, self.context_lens)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits

    def step(self, tokens: torch.Tensor | None = None, advance: bool = True) -> torch.Tensor:
        if tokens is not None:
            self.tokens.copy_(tokens)
        logits = self.replay()
        if advance:
            self.context_lens.add_(1)
        return logits
