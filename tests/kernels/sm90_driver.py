"""A stand-in for Triton's active driver that answers sm_90, so that the compile scripts beside
this file (`compiled_*.py`, each run in a process of its own) can `warmup` a kernel for Hopper
on a machine without a GPU: warmup compiles without launching."""

from __future__ import annotations

import torch
import triton
from triton.backends.compiler import GPUTarget


class Sm90:
    """The driver calls a compile-only warmup makes."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def use_sm90() -> None:
    """Make the stand-in Triton's active driver."""
    triton.runtime.driver.set_active(Sm90())
