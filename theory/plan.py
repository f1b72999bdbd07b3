"""A launch plan: the kernels an implementation launches for one case, as it declares them.

An implementation says what it will do (from its own code: its grid arithmetic, tiles, splits),
never what a timer saw. The tiered model charges one launch per kernel and the traffic of the
partial results that pass between them (split-K partials, split-KV partial outputs), so those are
the facts a plan carries. A vendor library's plan is not in our code; where one is recorded it
says so in `source` ("observed": read from a profiler's kernel list, never from its timings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The matrix instructions a kernel's tensor cores run: not known, mma.sync, wgmma.
MMA_KINDS = ("", "sync", "wgmma")
# How a kernel deals its work to its programs: whole tiles, or stream-K's equal shares.
SCHEDULES = ("", "stream-k")


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel of a plan. `grid`: programs (CTAs) per grid dimension; `tile`: the block shape
    one program computes (e.g. BLOCK_M, BLOCK_N, BLOCK_K); `splits`: how many programs share one
    output tile's reduction (split-K, split-KV); `partial_bytes`: bytes of partial results this
    kernel writes to HBM for a later kernel (or reads from an earlier one); `inflight_bytes`: the
    bytes of loads one program keeps in flight (its tiles of one pipeline stage times the
    stages), 0 where the kernel does not declare it (a library's); `mma`: the matrix
    instructions its tensor cores run, "sync" (warp-level mma.sync, as Ampere-era code issues
    it) or "wgmma" (Hopper's warpgroup MMA), "" where not known."""

    name: str
    grid: tuple[int, ...] = ()
    tile: tuple[int, ...] = ()
    splits: int = 1
    partial_bytes: float = 0.0
    inflight_bytes: float = 0.0
    mma: str = ""
    schedule: str = ""

    def __post_init__(self) -> None:
        if self.mma not in MMA_KINDS:
            raise ValueError(f"mma must be one of {MMA_KINDS}, got {self.mma!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    @property
    def programs(self) -> int:
        """Programs launched: the product of the grid (0 when the grid is not declared)."""
        total = 1 if self.grid else 0
        for g in self.grid:
            total *= g
        return total

    def describe(self) -> str:
        parts = [self.name]
        if self.grid:
            parts.append("grid " + "x".join(map(str, self.grid)))
        if self.tile:
            parts.append("tile " + "x".join(map(str, self.tile)))
        if self.splits > 1:
            parts.append(f"split {self.splits}")
        if self.partial_bytes:
            parts.append(f"partial {self.partial_bytes:.0f}")
        if self.inflight_bytes:
            parts.append(f"inflight {self.inflight_bytes:.0f}")
        if self.mma:
            parts.append(f"mma {self.mma}")
        if self.schedule:
            parts.append(f"schedule {self.schedule}")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> KernelLaunch:
        """The launch `describe` wrote."""
        words = text.split()
        fields: dict = {"name": words[0]}
        for key, value in zip(words[1::2], words[2::2], strict=False):
            if key in ("grid", "tile"):
                fields[key] = tuple(int(v) for v in value.split("x"))
            elif key == "split":
                fields["splits"] = int(value)
            elif key == "partial":
                fields["partial_bytes"] = float(value)
            elif key == "inflight":
                fields["inflight_bytes"] = float(value)
            elif key in ("mma", "schedule"):
                fields[key] = value
        return cls(**fields)


@dataclass(frozen=True)
class LaunchPlan:
    """The kernels one call launches, in order; `source` is "declared" (the implementation's own
    code) or "observed" (a profiler's kernel list)."""

    kernels: tuple[KernelLaunch, ...]
    source: str = "declared"
    notes: tuple[str, ...] = field(default=())
    # Attention kernels: whether the softmax exponent overlaps the matrix products (ping-pong
    # warpgroups), or only the second of them (P V of the previous block runs while the softmax
    # of this one does: FlashAttention-3's intra-warpgroup pipelining), and the FP32 ALU
    # operations per score besides the exp2 (scale, max, subtract, sum, convert), counted from
    # the kernel's code.
    exp_overlapped: bool = False
    exp_beside_pv: bool = False
    alu_ops_per_score: float = 0.0
    # The first kernel stands for a library's own kernels, which our code does not declare
    # (a profiler may observe them); not part of the record's text.
    opaque: bool = False

    def __post_init__(self) -> None:
        if not self.kernels:
            raise ValueError("a launch plan has at least one kernel")
        if self.source not in ("declared", "observed"):
            raise ValueError(f"source must be declared or observed, got {self.source!r}")

    @property
    def launches(self) -> int:
        return len(self.kernels)

    @property
    def products_in_series(self) -> float:
        """The share of an attention kernel's matrix products its softmax waits for: all (1),
        none (0: overlapped), or Q K^T, half of them (0.5: the softmax beside P V only)."""
        return 0.0 if self.exp_overlapped else 0.5 if self.exp_beside_pv else 1.0

    @property
    def main(self) -> KernelLaunch:
        """The kernel that does the op's work: the first with a declared tile, else the first."""
        return next((k for k in self.kernels if k.tile), self.kernels[0])

    @property
    def partial_bytes(self) -> float:
        """Bytes of partial results written and read back between the plan's kernels."""
        return sum(k.partial_bytes for k in self.kernels)

    def describe(self) -> str:
        """One line for a record, which `parse` reads back: e.g. `2 kernels: gemv grid 128x4x1
        tile 1x4x512 split 4 partial 1024; sum_splits grid 4 tile 1024 partial 1024`, then
        `| alu 5.5` and `| exp overlapped` or `| exp beside pv` where declared."""
        noun = "kernel" if self.launches == 1 else "kernels"
        text = f"{self.launches} {noun}: " + "; ".join(k.describe() for k in self.kernels)
        if self.alu_ops_per_score:
            text += f" | alu {self.alu_ops_per_score:g}"
        if self.exp_overlapped:
            text += " | exp overlapped"
        if self.exp_beside_pv:
            text += " | exp beside pv"
        return text

    @classmethod
    def parse(cls, text: str, source: str = "declared") -> LaunchPlan | None:
        """The plan `describe` wrote (None for an empty text)."""
        if not text or ":" not in text:
            return None
        head, *flags = (part.strip() for part in text.split("|"))
        kernels = tuple(KernelLaunch.parse(k) for k in head.split(":", 1)[1].split(";"))
        alu = next((float(f.split()[1]) for f in flags if f.startswith("alu ")), 0.0)
        return cls(
            kernels,
            source,
            exp_overlapped="exp overlapped" in flags,
            exp_beside_pv="exp beside pv" in flags,
            alu_ops_per_score=alu,
        )
