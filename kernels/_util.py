"""Pieces shared by the kernel modules: interpreter detection, device facts, output buffers."""

from __future__ import annotations

import functools
import os

import torch

# Under Triton's CPU interpreter nothing is compiled and every program runs in numpy, one after
# another; the launchers pick one small configuration there instead of autotuning on the GPU.
H100_SMS = 132


def is_interpreter() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device`; an H100's count off the GPU, so that the launch
    heuristics take the same branches under the interpreter as on the target."""
    if device.type == "cuda":
        return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
    return H100_SMS


def output(out: torch.Tensor | None, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Return `out` after checking it can take the result, or a fresh tensor for it.

    The kernels write through raw pointers with contiguous strides, so `out` must be contiguous.
    """
    shape = tuple(shape)
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != torch.device(device):
        raise ValueError(
            f"out is {tuple(out.shape)} {out.dtype} on {out.device}; "
            f"expected {shape} {dtype} on {device}"
        )
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    return out


def check_float(*tensors: torch.Tensor) -> torch.dtype:
    """The common floating dtype of `tensors` (fp16, bf16 or fp32); raise on a mix."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise TypeError(f"inputs must share one dtype, got {sorted(map(str, dtypes))}")
    (dtype,) = dtypes
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"unsupported dtype {dtype}")
    return dtype
