"""Each collective through torch.distributed: its buffers, its call, and the check of what it
delivered against a float64 reference.

Inputs are fresh random whole numbers in [-4, 4] in the case's dtype, drawn per rank from a
generator seeded by (run seed, case, rank), so every rank can redraw any other rank's input and
compute the float64 reference of its own output. Whole numbers this small add exactly in bf16
and fp16 as well (|sum| <= 4 x ranks), so a correct collective matches the reference exactly in
any order of additions; the check still allows the dtype's rounding of the result. The check
reads `CHECKED` positions of the output (drawn anew each case, plus the first and the last of
each chunk), so an 8 GiB message is checked without a float64 copy of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from roofbench.theory import comm

CHECKED = 4096  # output positions checked per case (besides each chunk's first and last)
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# The dtype's rounding of a whole number up to 4 x 64 ranks is exact; this is the tolerance the
# check allows a reduction anyway (relative to the largest magnitude of the reference).
RTOL = {"bf16": 2**-8, "fp16": 2**-11, "fp32": 2**-24}

# torch 2.13 renamed the tensor collectives (all_gather_single, ...) and warns on the old names,
# which are the ones every supported torch has.
warnings.filterwarnings("ignore", message=r".*is deprecated. Please use", category=FutureWarning)


@dataclass
class Buffers:
    """One rank's input and output of a case (the same tensor for the in-place all-reduce)."""

    send: torch.Tensor
    recv: torch.Tensor


def input_elements(collective: str, ranks: int, count: int) -> int:
    """Elements of each rank's input for a message of `count` elements (nccl-tests' sizes:
    all-gather's message is its output, so each rank sends count / n)."""
    return count // ranks if collective == "all_gather" else count


def output_elements(collective: str, ranks: int, count: int) -> int:
    return count // ranks if collective == "reduce_scatter" else count


def draw_input(
    collective: str, ranks: int, count: int, rank: int, seed: int, dtype: str, device
) -> torch.Tensor:
    """Rank `rank`'s input: whole numbers in [-4, 4] from a generator of its own."""
    gen = torch.Generator(device=device).manual_seed(seed * 1000 + rank)
    n = input_elements(collective, ranks, count)
    return torch.randint(-4, 5, (n,), generator=gen, dtype=TORCH_DTYPES[dtype], device=device)


def allocate(collective: str, ranks: int, count: int, rank: int, seed: int, dtype: str, device):
    send = draw_input(collective, ranks, count, rank, seed, dtype, device)
    if collective == "all_reduce":
        return Buffers(send, send)
    out = torch.empty(output_elements(collective, ranks, count), dtype=send.dtype, device=device)
    return Buffers(send, out)


def call(collective: str, buffers: Buffers, rank: int, ranks: int) -> Callable[[], None]:
    """One blocking (on the host for gloo, on the stream for NCCL) call of the collective."""
    send, recv = buffers.send, buffers.recv
    if collective == "all_reduce":
        return lambda: dist.all_reduce(send)
    if collective == "all_gather":
        return lambda: dist.all_gather_into_tensor(recv, send)
    if collective == "reduce_scatter":
        return lambda: dist.reduce_scatter_tensor(recv, send)
    if collective == "all_to_all":
        return lambda: dist.all_to_all_single(recv, send)
    if collective == "send_recv":
        # Each rank sends to the next and receives from the one before (nccl-tests' sendrecv).
        ops = [
            dist.P2POp(dist.isend, send, (rank + 1) % ranks),
            dist.P2POp(dist.irecv, recv, (rank - 1) % ranks),
        ]

        def exchange() -> None:
            for request in dist.batch_isend_irecv(ops):
                request.wait()

        return exchange
    raise ValueError(f"unknown collective {collective!r} (known: {', '.join(comm.COLLECTIVES)})")


def positions(count: int, chunks: int, seed: int, device) -> torch.Tensor:
    """Output positions to check: `CHECKED` drawn at random, and each chunk's first and last."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    drawn = torch.randint(0, count, (min(CHECKED, count),), generator=gen)
    size = count // chunks
    edges = torch.tensor(
        [i * size for i in range(chunks)] + [(i + 1) * size - 1 for i in range(chunks)]
    )
    return torch.unique(torch.cat([drawn, edges])).to(device)


def reference(
    collective: str, ranks: int, count: int, rank: int, seed: int, dtype: str, at: torch.Tensor
) -> torch.Tensor:
    """float64 values rank `rank`'s output must hold at positions `at`, from every rank's
    redrawn input (one redrawn input alive at a time)."""
    device = at.device

    def source(j: int) -> torch.Tensor:
        return draw_input(collective, ranks, count, j, seed, dtype, device)

    out_n = output_elements(collective, ranks, count)
    chunk = out_n // ranks if collective in ("all_gather", "all_to_all") else out_n
    if collective == "all_reduce":
        return sum(source(j)[at].double() for j in range(ranks))
    if collective == "reduce_scatter":
        return sum(source(j)[rank * out_n + at].double() for j in range(ranks))
    if collective == "send_recv":
        return source((rank - 1) % ranks)[at].double()
    owner, offset = at // chunk, at % chunk  # which rank's chunk each position came from
    ref = torch.empty(at.shape, dtype=torch.float64, device=device)
    for j in range(ranks):
        mine = owner == j
        if collective == "all_gather":
            ref[mine] = source(j)[offset[mine]].double()
        else:  # all_to_all: rank j's chunk number `rank`
            ref[mine] = source(j)[rank * chunk + offset[mine]].double()
    return ref


def check(
    collective: str, buffers: Buffers, ranks: int, count: int, rank: int, seed: int, dtype: str
) -> tuple[float, float]:
    """(max |output - reference|, tolerance) over the checked positions of this rank's output."""
    out = buffers.recv
    chunks = ranks if collective in ("all_gather", "all_to_all") else 1
    at = positions(out.numel(), chunks, seed, out.device)
    ref = reference(collective, ranks, count, rank, seed, dtype, at)
    err = (out[at].double() - ref).abs().max().item()
    tol = RTOL[dtype] * max(ref.abs().max().item(), 1.0)
    return err, tol
