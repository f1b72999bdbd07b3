"""Our Triton GEMV, slowed on purpose: the real kernel, then a spin of about a tenth of its own
time. Loaded as a plugin it replaces the `triton` GEMV, so a comparison against a baseline of
the unchanged code must flag exactly the GEMV cases of `triton` as slower.

The spin's length is measured, not guessed: when a case is bound, the real kernel is timed once
the way the suite times short kernels (graph replay, cold L2), and the spin runs SLOWDOWN x that
time at the SM clock NVML reports. The spin is one more launch, so a few-microsecond GEMV slows
by more than SLOWDOWN (the launch floor comes on top); on a CPU there is no spin.
"""

import torch

from roofbench.kernels import gemv as _gemv
from roofbench.kernels.catalog import get_impl
from roofbench.kernels.registry import register_impl

SLOWDOWN = 0.10
_REAL = get_impl("gemv", "triton")


def _spin_cycles(case) -> int:
    from roofbench.bench.core.timing import cold_l2_replay_s

    device = torch.device("cuda")
    x, w = case.make_inputs(device, seed=1)
    out = case.empty_output(device)
    seconds = cold_l2_replay_s(lambda: _gemv.gemv(x, w, out=out))
    return int(SLOWDOWN * seconds * torch.cuda.clock_rate() * 1e6)


def slowed(case):
    """The real GEMV, then a spin of SLOWDOWN x its measured time."""
    if not torch.cuda.is_available():
        return _gemv.gemv
    cycles = _spin_cycles(case)

    def run(x, w, out=None):
        result = _gemv.gemv(x, w, out=out)
        torch.cuda._sleep(cycles)
        return result

    return run


register_impl(
    "gemv",
    "triton",
    _gemv.gemv,
    prepare=slowed,
    plan=_REAL.plan,
    description=f"Triton GEMV plus a spin of {SLOWDOWN:.0%} of its measured time",
    replace=True,
)
