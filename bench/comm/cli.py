"""The `roofbench comm` sub-command's arguments, and the command itself."""

from __future__ import annotations

import argparse

from roofbench.bench.cli_args import names_of, positive_float
from roofbench.bench.comm.cases import DTYPES, SWEEPS, parse_size
from roofbench.theory.comm import COLLECTIVES


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_link_options(p) -> None:
    """The options every multi-GPU command shares: the link's calibration and the backend."""
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="no send/recv probes: predict on the datasheet link only",
    )
    p.add_argument(
        "--backend",
        choices=("nccl", "gloo"),
        help="default: nccl where torch sees CUDA GPUs, else gloo",
    )


def add_comm_parser(sub) -> None:
    p = sub.add_parser(
        "comm",
        help="measure NCCL (or gloo) collectives across ranks started by torchrun",
        description="All-reduce, all-gather, reduce-scatter, all-to-all and send/recv at message "
        "sizes 8 B .. 8 GiB, checked, timed and held against theory.comm; run one process per "
        "GPU: torchrun --nproc-per-node=N --no-python roofbench comm [options]. Writes "
        "results/<gpu-slug>/comm-<UTC time>/ (records.csv, run.json, summary.md, comm.png).",
    )
    p.add_argument("--sweep", choices=tuple(SWEEPS), default="quick")
    p.add_argument(
        "--collectives",
        type=names_of(COLLECTIVES),
        default=COLLECTIVES,
        metavar="LIST",
        help=f"comma-separated, of {', '.join(COLLECTIVES)} (default: all)",
    )
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument(
        "--max-bytes",
        type=_size,
        metavar="SIZE",
        help="largest message size to measure (e.g. 64K, 1G; default: the sweep's, 8 GiB)",
    )
    p.add_argument("--out", default="results", help="folder the run folder goes under")
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=0.5,
        metavar="S",
        help="most seconds of timed collectives per case (default 0.5)",
    )
    add_link_options(p)


def comm_command(args, console) -> int:
    from roofbench.bench.comm.run import run_comm

    folder = run_comm(args, console)
    if folder is not None:
        console.print(f"wrote {folder}")
    return 0
