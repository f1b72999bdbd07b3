"""The `roofbench tp` sub-command's arguments, and the command itself."""

from __future__ import annotations

from roofbench.bench.cli_args import positive_float, positive_int
from roofbench.bench.comm.cli import add_link_options
from roofbench.bench.comm.tp_points import SWEEPS


def add_tp_parser(sub) -> None:
    p = sub.add_parser(
        "tp",
        help="measure a tensor-parallel decoder (TTFT, TBT) across ranks started by torchrun",
        description="The decoder split Megatron-style over the ranks (TP = their number), each "
        "drawing only its part of the random weights; checked against float64 at a reduced "
        "size, then prefill (TTFT) and decode (TBT) timed and held against theory.tp (per-GPU "
        "step + all-reduces + the logits all-gather); run one process per GPU: torchrun "
        "--nproc-per-node=N --no-python roofbench tp [options]. Writes "
        "results/<gpu-slug>/tp-<model>-tp<N>-<UTC time>/ (records.csv, run.json).",
    )
    p.add_argument("--model", default="llama3-70b", help="built-in name or a config.json path")
    p.add_argument("--layers", type=positive_int, metavar="L", help="layers (default: all)")
    p.add_argument("--sweep", choices=tuple(SWEEPS), default="quick")
    p.add_argument(
        "--max-seq",
        type=positive_int,
        metavar="N",
        help="measure only the points of at most N tokens (prompt or context)",
    )
    p.add_argument(
        "--impl",
        default="torch",
        metavar="IMPL",
        help="the decoder's kernels: a preset (torch, triton) or op=impl choices, as "
        "roofbench model's --impls takes for one backend (default: torch)",
    )
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="on GPUs (CPUs: fp32)")
    p.add_argument("--out", default="results", help="folder the run folder goes under")
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=1.0,
        metavar="S",
        help="most seconds of timed calls per point (default 1)",
    )
    add_link_options(p)


def tp_command(args, console) -> int:
    from roofbench.bench.comm.tp_run import run_tp
    from roofbench.kernels.llama import parse_backend, resolve_backend
    from roofbench.theory.llm import load_model

    load_model(args.model)  # an unknown model or a bad config.json fails before any rank starts
    resolve_backend(parse_backend(args.impl))
    folder = run_tp(args, console)
    if folder is not None:
        console.print(f"wrote {folder}")
    return 0
