"""What `roofbench comm` measures: collectives x message sizes (powers of two, 8 B to 8 GiB),
the sweeps that pick them, and the environment every rank runs in."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

from roofbench.theory import comm

MIN_EXPONENT, MAX_EXPONENT = 3, 33  # 8 B .. 8 GiB
SWEEPS = {
    # Every third power of two: 8 B, 64 B, ..., 1 GiB, 8 GiB (11 sizes).
    "quick": tuple(2**e for e in range(MIN_EXPONENT, MAX_EXPONENT + 1, 3)),
    "full": tuple(2**e for e in range(MIN_EXPONENT, MAX_EXPONENT + 1)),
}
DTYPES = ("bf16", "fp16", "fp32")

# NVLink multicast (NVLS) stays off in every rank: NCCL reads these when it starts, so they are
# set before the process group exists. A value already set is kept, never removed.
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def keep_multicast_off(env: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set each of MULTICAST_OFF in `env` where it is absent; returns the values now in force."""
    for key, value in MULTICAST_OFF.items():
        env.setdefault(key, value)
    return {key: env[key] for key in MULTICAST_OFF}


def parse_size(text: str) -> int:
    """`4096`, `4K`, `256M`, `1G` (binary units) as bytes; ValueError naming the text."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    body = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(body[-1:], 1)
    digits = body[:-1] if body[-1:] in units else body
    if not digits.isdigit() or int(digits) * scale <= 0:
        raise ValueError(f"size {text!r} is not a positive number of bytes (e.g. 4096, 4K, 1G)")
    return int(digits) * scale


def sizes(sweep: str, max_bytes: int | None = None) -> tuple[int, ...]:
    """The sweep's message sizes, up to `max_bytes` when given."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r} (known: {', '.join(SWEEPS)})")
    picked = tuple(s for s in SWEEPS[sweep] if max_bytes is None or s <= max_bytes)
    if not picked:
        raise ValueError(f"no message size of sweep {sweep} is at most {max_bytes} B")
    return picked


@dataclass(frozen=True)
class CommCase:
    """One collective at one message size (nccl-tests' S), dtype and number of ranks."""

    collective: str
    size_bytes: int
    dtype: str
    ranks: int

    @property
    def op(self) -> str:
        return f"comm_{self.collective}"

    @property
    def id(self) -> str:
        return f"{self.op}-{self.size_bytes}B-{self.dtype}-{self.ranks}gpus"

    def refuses(self) -> str | None:
        """Why this case cannot run (a size that does not split), or None."""
        if self.collective == "send_recv" and self.ranks < 2:
            return "send/recv needs at least 2 ranks"
        try:
            comm.chunk_elements(self.collective, self.ranks, self.size_bytes, self.dtype)
        except ValueError as err:
            return str(err)
        return None

    @property
    def count(self) -> int:
        """Elements of the message."""
        return comm.chunk_elements(self.collective, self.ranks, self.size_bytes, self.dtype)


def cases(
    sweep: str, collectives: tuple[str, ...], dtype: str, ranks: int, max_bytes: int | None = None
) -> list[CommCase]:
    """Every collective at every size of the sweep, in the order they are measured."""
    wrong = [c for c in collectives if c not in comm.COLLECTIVES]
    if wrong:
        raise ValueError(f"unknown {', '.join(wrong)} (known: {', '.join(comm.COLLECTIVES)})")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return [CommCase(c, s, dtype, ranks) for c in collectives for s in sizes(sweep, max_bytes)]
