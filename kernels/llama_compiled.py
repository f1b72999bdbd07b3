"""The decoder's "compile" backend: the "torch" backend's phases compiled by `torch.compile`.

This is the route a user takes who wants a faster decoder without writing kernels (gpt-fast's):
the same model code (`kernels.llama.Llama` on "torch": F.linear, SDPA, torch's RMSNorm, rotary
and SiLU written in torch) handed to `torch.compile`, which traces it and generates kernels of its
own (inductor: Triton kernels that fuse the element-wise work into fewer launches; the matmuls
and attention stay cuBLAS and SDPA unless inductor chooses otherwise).

Three phases are compiled: the full forward behind `prefill` (with the KV cache written) and
`naive_step` (no cache; a graph of its own), and the whole `decode_step`, cache append included.
The host-side checks and the cache allocation stay eager, in `Llama`'s phases. The compiled code
is the torch backend's (the same pieces: `Llama._qkv`, `_linear`, `_mlp`, `_logits`, in the same
order) but for one line per tensor: K and V go into the cache by an `index_put_` on the whole
cache indexed by tensors (as gpt-fast writes its cache), not by `scatter_` / `copy_` into a view
of one layer. Those are functionalised into a scatter over a copy of the layer's cache, which
inductor does not write in place: its generated code (read on the CPU, torch 2.13) copied the
whole cache per layer and back into the cache on every step, several times the KV bytes a step
must read. The tensor-indexed `index_put_` is written in place (no buffer of the cache's size).
Compilation:

- `fullgraph=True`: a graph break would leave part of the step in eager Python, so it fails
  instead; `dynamic=False`: every shape (batch, tokens, cache length) gets kernels of its own, as
  a static-shape serving step does. Each new shape compiles at its first call, which is never
  timed: a model run's gate, the graph timer's warm-up calls and the event timer's first call
  come before any sample.
- mode "default": no CUDA graphs of torch.compile's own ("reduce-overhead" would record them
  with cudagraph trees, which cannot be captured inside another graph), so the suite's own
  capture (`DecodeGraph`, the model run's graph timer) records the compiled step like every
  other backend's, and the backends are timed the same way.
- The recompile limits are raised around every call (one entry per shape of a sweep, past
  dynamo's default of 8) and reaching them raises instead of silently running eager code under
  this backend's name.

The compiler is inductor by default; `compile_with(model, "aot_eager")` traces and functionalises
the same graphs without generating code (what the CPU tests use: no C++ build). The kernels are
inductor's, so `kernels.llama_plan` cannot declare them (`NotDeclared`): a model run reports this
backend's measured times against the phase roofline only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COMPILE = "compile"  # the backend's name (a preset of `kernels.llama`)
COMPILER = "inductor"  # torch.compile's backend on this backend by default
MODE = "default"  # no CUDA graphs of its own: the suite captures the compiled step (above)
RECOMPILE_LIMIT = 1024  # compiled shapes per phase; a full model sweep has some hundreds
ACCUMULATED_LIMIT = 4 * RECOMPILE_LIMIT


def _limits():
    """Dynamo's recompile limits raised for one call, failing (not falling back to eager) past
    them."""
    return torch._dynamo.config.patch(
        recompile_limit=RECOMPILE_LIMIT,
        accumulated_recompile_limit=ACCUMULATED_LIMIT,
        fail_on_recompile_limit_hit=True,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """torch's RMSNorm over the last dimension, as `kernels.llama.rms_norm` calls it."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _append(kv: torch.Tensor, layer: int, index: tuple, k: torch.Tensor, v: torch.Tensor) -> None:
    """K and V of `layer` into the cache at `index` (batch, head and position index tensors,
    broadcast to k's leading dimensions): one `index_put_` on the whole cache each, indexed by
    tensors only, which inductor writes in place."""
    layer_t = torch.full((), layer, dtype=torch.long, device=kv.device)
    kv.index_put_((layer_t, torch.zeros_like(layer_t), *index), k)
    kv.index_put_((layer_t, torch.ones_like(layer_t), *index), v)


def _forward(model, tokens, cache, cos, sin) -> torch.Tensor:
    """`Llama._forward` on `model` (the torch backend), K and V appended by `_append`."""
    batch, n = tokens.shape
    cfg, w, eps = model.config, model.weights, model.config.rms_norm_eps
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    if cache is not None:
        device = cache.kv.device
        rows = torch.arange(batch, device=device)[:, None, None]
        heads = torch.arange(cfg.num_kv_heads, device=device)[None, :, None]
        index = (rows, heads, torch.arange(n, device=device)[None, None, :])
    x = F.embedding(tokens.reshape(-1), w.embed)  # [B*N, hidden]
    for i, layer in enumerate(w.layers):
        q, k, v = model._qkv(rms_norm(x, layer.attn_norm, eps), layer, batch, n, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, N, D]
        if cache is not None:
            _append(cache.kv, i, index, k, v)
        o = model._fn["prefill_attention"](q, k, v, causal=True)  # [B, Hq, N, D]
        o = o.transpose(1, 2).reshape(batch * n, cfg.q_dim)
        x = x + model._linear(o, layer.wo, layer.bo)
        x = x + model._mlp(rms_norm(x, layer.mlp_norm, eps), layer)
    return model._logits(x.view(batch, n, -1)[:, -1])


def _decode(model, cache, tokens, context_lens) -> torch.Tensor:
    """`Llama.decode_step`'s body on `model` (the torch backend), K and V appended by
    `_append` at each sequence's position."""
    batch = tokens.shape[0]
    cfg, w, eps = model.config, model.weights, model.config.rms_norm_eps
    cache.positions.copy_(context_lens)
    torch.add(context_lens, 1, out=cache.attend_lens)
    cos = cache.cos.index_select(0, cache.positions)[:, None, None, :]
    sin = cache.sin.index_select(0, cache.positions)[:, None, None, :]
    rows = torch.arange(batch, device=tokens.device)[:, None]
    heads = torch.arange(cfg.num_kv_heads, device=tokens.device)[None, :]
    index = (rows, heads, cache.positions[:, None])
    x = F.embedding(tokens.reshape(batch), w.embed)  # [B, hidden]
    for i, layer in enumerate(w.layers):
        q, k, v = model._qkv(rms_norm(x, layer.attn_norm, eps), layer, batch, 1, cos, sin)
        _append(cache.kv, i, index, k[:, 0], v[:, 0])
        o = model._fn["decode_attention"](q[:, 0], cache.k(i), cache.v(i), cache.attend_lens)
        x = x + model._linear(o.reshape(batch, cfg.q_dim), layer.wo, layer.bo)
        x = x + model._mlp(rms_norm(x, layer.mlp_norm, eps), layer)
    return model._logits(x)


class Phases:
    """The compiled forward and decode step of a "torch" decoder over `model`'s weights.

    `Llama` calls `forward(model, ...)` and `decode_step(model, ...)` after its own checks, as it
    calls `kernels.fused`'s; the cache is the one `Llama` passes (or `model`'s, for a step).
    """

    def __init__(self, model, compiler=COMPILER):
        self.compiler = compiler
        self.inner = model.with_backend("torch")  # the same weights, shared
        mode = MODE if compiler == "inductor" else None
        options = {"backend": compiler, "mode": mode, "fullgraph": True, "dynamic": False}
        self._forward = torch.compile(_forward, **options)
        self._decode = torch.compile(_decode, **options)

    def forward(self, model, tokens, cache, cos, sin) -> torch.Tensor:
        """The torch backend's forward, compiled (K and V into `cache` if given)."""
        with _limits():
            return self._forward(self.inner, tokens, cache, cos, sin)

    def decode_step(self, model, tokens, context_lens) -> torch.Tensor:
        """The torch backend's decode step, compiled, over `model`'s cache."""
        with _limits():
            return self._decode(self.inner, model.cache, tokens, context_lens)


def compile_with(model, compiler: str):
    """`model` (on the compile backend) recompiled with torch.compile backend `compiler` (e.g.
    "aot_eager"); returns it. Raises ValueError for a model on another backend."""
    if model.backend != COMPILE:
        raise ValueError(
            f"compile_with takes a model on the {COMPILE!r} backend, got {model.backend!r}"
        )
    model._compiled = Phases(model, compiler)
    return model
