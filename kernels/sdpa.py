"""Each backend of torch's scaled_dot_product_attention on its own, as a peer implementation.

torch dispatches SDPA to one of several kernels (FlashAttention-2, cuDNN's fused attention,
the memory-efficient kernel, a math fallback). `forced(backend, fn)` runs `fn` with only that
backend allowed (`torch.nn.attention.sdpa_kernel`); when the backend refuses the inputs, torch
raises "No available kernel" (on the CPU: "No viable backend") after warning why, and the
wrapper turns that into `BackendRefused(<torch's reason>)`, an `Unsupported`: the record is
skipped with the reason, not failed.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable

import torch

from roofbench.kernels.registry import Unsupported

# Our name -> torch's SDPBackend member.
BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
}


# What torch raises when the allowed backend cannot take the inputs (CUDA; CPU).
REFUSALS = ("No available kernel", "No viable backend")


class BackendRefused(Unsupported):
    """torch found no kernel of the forced backend for these inputs (carries torch's reason)."""


def _sdpa_backend(backend: str):
    from torch.nn.attention import SDPBackend

    return getattr(SDPBackend, BACKENDS[backend])


def unavailable(backend: str) -> str | None:
    """None when `backend` can run on this machine, else why not."""
    if not torch.cuda.is_available():
        return f"needs a CUDA GPU (SDPA's {backend} backend is a CUDA kernel)"
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401
    except ImportError:
        return "this torch has no torch.nn.attention.sdpa_kernel"
    if not hasattr(SDPBackend, BACKENDS[backend]):
        return f"this torch has no SDPBackend.{BACKENDS[backend]}"
    major, _ = torch.cuda.get_device_capability()
    if backend == "flash" and major < 8:
        return "SDPA's flash backend needs compute capability 8.0 or newer"
    if backend == "cudnn":
        if not torch.backends.cudnn.is_available():
            return "torch was built without cuDNN"
        if major < 8:
            return "SDPA's cuDNN backend needs compute capability 8.0 or newer"
    return None


# Where in torch's source a warning came from, and that the backends we did not allow are off:
# neither says why the allowed backend refused.
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")
_GENERIC = ("not used because", "has been runtime disabled")


def _first_sentence(text: str) -> str:
    line = _TRIGGERED.sub("", text.splitlines()[0]).strip()
    end = line.find(". ")
    return line[: end + 1] if end >= 0 else line


def _reason(warned: list[warnings.WarningMessage]) -> str:
    """Why torch refused, from its warnings: the first sentence of the specific ones (the rule
    that failed), without the source location and without the generic lines."""
    texts = [str(w.message).strip() for w in warned if str(w.message).strip()]
    specific = [t for t in texts if not any(g in t for g in _GENERIC)] or texts
    return "; ".join(dict.fromkeys(_first_sentence(t) for t in specific[:2]))


def forced(backend: str, fn: Callable) -> Callable:
    """`fn` with SDPA restricted to `backend`; a refusal raises BackendRefused with the reason."""
    member = _sdpa_backend(backend) if unavailable(backend) is None else None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from torch.nn.attention import sdpa_kernel

        if member is None:
            raise BackendRefused(unavailable(backend) or f"{backend} is not available")
        with warnings.catch_warnings(record=True) as warned, sdpa_kernel(member):
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except RuntimeError as err:
                if not any(text in str(err) for text in REFUSALS):
                    raise
                why = _reason(warned) or str(err).splitlines()[0]
                raise BackendRefused(f"SDPA {backend} backend refused: {why}") from None

    return run
