"""Pieces shared by the kernel modules: interpreter detection, device facts, output buffers."""

from __future__ import annotations

import functools
import math
import os
import statistics
from collections.abc import Callable, Hashable

import torch

try:  # host-side TMA descriptors (Triton >= 3.3); without them the pointer kernels serve
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

# Under Triton's CPU interpreter nothing is compiled and every program runs in numpy, one after
# another; the launchers pick one small configuration there instead of autotuning on the GPU.
H100_SMS = 132
# log2(e): the attention kernels take exp(x) as exp2(x * LOG2E), the multiply folded into the scale.
LOG2E = 1.4426950408889634
# Head dimensions the attention kernels take: padded to the next power of two inside (tl.dot's
# K step needs >= 16; 256 is the largest any served decoder uses).
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def default_device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU: where a case runs unless told otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


try:  # grid dependency control: programmatic dependent launch (Triton >= 3.4, Hopper and newer)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_GDC = True
except ImportError:  # pragma: no cover - older Triton: stand-ins never called (PDL stays off)
    import triton

    HAS_GDC = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass


def has_pdl(device: torch.device) -> bool:
    """True where a kernel can be launched as a programmatic dependent of the one before it
    (it may start while that one drains, and waits for its results with `gdc_wait`): a
    Hopper-or-newer CUDA device and a Triton with grid dependency control, not the interpreter."""
    if not HAS_GDC or is_interpreter() or device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability(index)[0] >= 9


def has_tma(device: torch.device) -> bool:
    """True where tensor-descriptor (TMA) kernels are the default: a Hopper-or-newer CUDA device
    and a Triton that has host-side descriptors. The interpreter keeps the pointer kernels (tests
    can still ask for the descriptor kernels explicitly)."""
    if TensorDescriptor is None or is_interpreter() or device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability(index)[0] >= 9


def tma_compatible(*tensors: torch.Tensor) -> bool:
    """True when each 2-D view can back a TMA descriptor: 16-byte aligned base and row stride,
    unit last stride."""
    for t in tensors:
        es = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any(s * es % 16 for s in t.stride()[:-1]):
            return False
    return True


def _do_bench_s(launch: Callable[[], object]) -> float:
    """Triton's own timer (per-call events after an L2 flush), in seconds: the tuners' timer
    until the suite installs its cold-L2 graph replay with `set_tuning_timer`."""
    import triton.testing

    return triton.testing.do_bench(launch, warmup=5, rep=20) * 1e-3


class Rotation:
    """A tuning launch over several argument sets, the next set on each call.

    The sets hold at least twice L2 together (`rotation_sets`), so the tuner's timer can replay
    the calls back to back in one graph with no L2 flush, as the sweep times short kernels: each
    call reads its inputs from DRAM, while a workspace that every call reuses (split-K partials)
    stays in L2, as it does between a model's layers. A flush between calls would instead write
    those dirty partials back on the timed call's account (0.5-2 us on a split-K GEMM of ~10 us,
    which is what separates the candidates there).
    """

    def __init__(self, launches: list[Callable[[], object]]):
        if not launches:
            raise ValueError("a Rotation needs at least one launch")
        self.launches = list(launches)
        self._next = 0

    def __len__(self) -> int:
        return len(self.launches)

    def __call__(self) -> None:
        i = self._next
        self._next = (i + 1) % len(self.launches)
        self.launches[i]()


# The most argument sets a Rotation gets: inputs so small that more would be needed to fill L2
# twice make a latency-bound launch, for which where they are read from matters little (the
# sweep's own rotation stops at 256 sets; 64 keeps a tuning round's graphs short).
MAX_ROTATION_SETS = 64


def rotation_sets(tensors: tuple[torch.Tensor, ...], min_bytes: int) -> list[tuple]:
    """`tensors` and copies of them until the sets hold `min_bytes` together, at most
    MAX_ROTATION_SETS (the first set is `tensors` itself; one set that large gets no copies)."""
    per_set = sum(t.numel() * t.element_size() for t in tensors)
    copies = max(0, math.ceil(min_bytes / max(per_set, 1)) - 1)
    copies = min(copies, MAX_ROTATION_SETS - 1)
    return [tensors] + [tuple(t.clone() for t in tensors) for _ in range(copies)]


def l2_bytes(device: torch.device) -> int:
    """The GPU's L2 size in bytes (0 off CUDA)."""
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).L2_cache_size


# The timer every Tuner uses unless given one; kernels/ must not import bench/, so bench installs
# its own (bench.core.timing.cold_l2_replay_s) when it is imported.
_TUNING_TIMER: list[Callable[[Callable[[], object]], float]] = [_do_bench_s]


def set_tuning_timer(time_s: Callable[[Callable[[], object]], float]) -> None:
    """Make `time_s(launch) -> seconds` the timer of every Tuner built without its own."""
    _TUNING_TIMER[0] = time_s


# Tuning rounds: every candidate is timed once per round, the rounds interleaved, and its median
# over the rounds decides; a candidate within TIE_FRACTION of the fastest that comes earlier in
# the launcher's list wins. One pass in a fixed order let a transient (a clock step, the power cap
# settling after a heavy case) decide: on an H200 quick sweep, three of five processes of
# unchanged code kept the tile another process had found 20-45% slower.
TUNING_ROUNDS = 3
TIE_FRACTION = 0.03


def tuned_choice(timings: list[tuple[dict, list[float]]], tie: float = TIE_FRACTION):
    """(the chosen candidate, its median): the first in list order whose median over its rounds
    is within `tie` of the fastest median; (None, inf) when every candidate failed."""
    medians = [(cfg, statistics.median(ts) if ts else math.inf) for cfg, ts in timings]
    fastest = min((t for _, t in medians), default=math.inf)
    if not math.isfinite(fastest):
        return None, math.inf
    return next((cfg, t) for cfg, t in medians if t <= fastest * (1 + tie))


class Tuner:
    """Pick the fastest of a few launch configurations for each key, timed on first use.

    A launcher passes its candidate configurations (in its order of preference) and a function
    that launches one of them; each is timed by `time_s(launch)` (default: the timer
    `set_tuning_timer` installed; the suite installs its cold-L2 graph replay, which replays a
    `Rotation` without a flush, as the sweep times short kernels) in TUNING_ROUNDS interleaved
    rounds, and `tuned_choice` keeps one for the key. A
    candidate that fails to compile or launch (out of shared memory, say) is skipped. Unlike
    triton.autotune this times the whole launch (a split-K reduction pass included).
    """

    def __init__(
        self,
        time_s: Callable[[Callable[[], object]], float] | None = None,
        rounds: int = TUNING_ROUNDS,
    ):
        self._time_s = time_s
        self.rounds = rounds
        self.cache: dict[Hashable, dict] = {}
        self.timings: dict[Hashable, list[tuple[dict, float]]] = {}

    def time_s(self, launch: Callable[[], object]) -> float:
        return (self._time_s or _TUNING_TIMER[0])(launch)

    def pick(
        self,
        key: Hashable,
        make_candidates: Callable[[], list[dict]],
        launch: Callable[[dict], object],
        make_timed: Callable[[], Callable[[dict], Callable[[], object]]] | None = None,
    ) -> dict:
        """The cached choice for `key`, or the tuned one of `make_candidates()` (then cached).

        Each candidate's timed call is `lambda: launch(cfg)`, or with `make_timed` (called once,
        when tuning starts) `make_timed()(cfg)`: a `Rotation` over copies of the inputs, say."""
        best = self.cache.get(key)
        if best is not None:
            return best
        candidates = make_candidates()
        if len(candidates) == 1:
            self.cache[key] = candidates[0]
            return candidates[0]
        timed = make_timed() if make_timed else (lambda cfg: lambda: launch(cfg))
        times: list[list[float]] = [[] for _ in candidates]
        failed: set[int] = set()
        error = None
        for _ in range(self.rounds):
            for i, cfg in enumerate(candidates):
                if i in failed:
                    continue
                try:
                    times[i].append(self.time_s(timed(cfg)))
                except Exception as exc:  # noqa: BLE001 - a config the compiler rejects is skipped
                    error = exc
                    failed.add(i)
                    times[i] = []
        best, _ = tuned_choice(list(zip(candidates, times, strict=True)))
        if best is None:
            raise RuntimeError(f"no launch configuration worked for {key}") from error
        self.cache[key] = best
        self.timings[key] = [
            (cfg, statistics.median(ts) if ts else math.inf)
            for cfg, ts in zip(candidates, times, strict=True)
        ]
        return best


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


def linear_reference(
    x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x @ w^T by torch's nn.Linear product (cuBLAS on the GPU): the baseline for the Triton GEMM
    and GEMV."""
    y = torch.nn.functional.linear(x, w)
    if out is None:
        return y
    return out.copy_(y)


def check_float(*tensors: torch.Tensor) -> torch.dtype:
    """The common floating dtype of `tensors` (fp16, bf16 or fp32); raise on a mix."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise TypeError(f"inputs must share one dtype, got {sorted(map(str, dtypes))}")
    (dtype,) = dtypes
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"unsupported dtype {dtype}")
    return dtype
