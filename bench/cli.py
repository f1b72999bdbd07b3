"""The `roofbench` command: one sub-command per job, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from roofbench.theory.hardware import GPUS
from roofbench.theory.ops import DTYPE_BYTES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict FLOPs, bytes, bound, TTFT, TBT and throughput of a model on a GPU",
        description="Roofline predictions of prefill and decode for one model and request shape.",
    )
    p.add_argument("--model", default="llama3-8b", help="built-in name or a config.json path")
    p.add_argument(
        "--gpu",
        metavar="SLUG",
        help=f"one of {', '.join(GPUS)} or an NVML name (default: the GPU NVML finds here, "
        "else h100-sxm)",
    )
    p.add_argument("--prompt-tokens", type=positive_int, default=1024, metavar="N")
    p.add_argument("--context", type=positive_int, metavar="N", help="default: the prompt length")
    p.add_argument("--batch", type=positive_int, default=1, metavar="B")
    p.add_argument("--generate", type=positive_int, default=128, metavar="G")
    p.add_argument("--dtype", default="bf16", choices=[d for d in DTYPE_BYTES if d != "tf32"])
    p.add_argument(
        "--no-causal", action="store_true", help="count the full N^2 attention, not the causal part"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _choices(known: tuple[str, ...]):
    """A comma-separated subset of `known`, refused with the known names otherwise."""

    def parse(text: str) -> tuple[str, ...]:
        picked = tuple(part.strip() for part in text.split(",") if part.strip())
        wrong = [p for p in picked if p not in known]
        if wrong or not picked:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(wrong) or 'empty list'} (known: {', '.join(known)})"
            )
        return picked

    return parse


def _add_run(sub) -> None:
    from roofbench.bench.cases import IMPLS, OPS, SWEEPS

    p = sub.add_parser(
        "run",
        help="measure a sweep on this GPU and write records, summary and plots",
        description="Measure every case of a sweep for our kernels and the torch references; "
        "write results/<gpu-slug>/<UTC time>/ (records.csv, run.json, summary.md, plots).",
    )
    p.add_argument("--sweep", choices=SWEEPS, default="quick")
    p.add_argument("--out", default="results", help="folder the run folder goes under")
    p.add_argument("--ops", type=_choices(OPS), default=OPS, help="comma-separated subset")
    p.add_argument("--impls", type=_choices(IMPLS), default=IMPLS, help="comma-separated subset")
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=0.5,
        metavar="S",
        help="most seconds of sampling per measurement (default 0.5)",
    )
    p.add_argument("--no-gpm", action="store_true", help="skip the 100 ms GPM window per case")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish a run folder a killed run left")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs (records CSV or pytest-benchmark JSON); exit 1 on a slowdown",
        description="Match cases of BASE and NEW; a case is slower when its median grew past "
        "the threshold and the p20..p80 spreads do not overlap.",
    )
    p.add_argument("base")
    p.add_argument("new")
    p.add_argument("--threshold", default="5%", help="e.g. 5%% or 0.05 (default 5%%)")
    p.add_argument(
        "--throttled-threshold",
        default="15%",
        help="threshold for a case throttled (power or thermal cap) in either run: its clock "
        "moves between batches (default 15%%)",
    )


def _add_model(sub) -> None:
    from roofbench.bench.model import BACKENDS, SWEEPS

    p = sub.add_parser(
        "model",
        help="measure TTFT, TBT, naive vs cached decode and MHA vs GQA of a Llama-shaped model",
        description="A Llama-shaped decoder with random weights, on our kernels and on torch, "
        "measured against theory.llm; writes results/<gpu-slug>/model-<model>-<UTC time>/.",
    )
    p.add_argument("--model", default="llama3-8b", help="built-in name or a config.json path")
    p.add_argument(
        "--layers",
        type=positive_int,
        metavar="L",
        help="layers to build (default: all, or as many as fit in half the GPU memory)",
    )
    p.add_argument("--sweep", choices=sorted(SWEEPS), default="quick")
    p.add_argument("--out", default="results", help="folder the run folder goes under")
    p.add_argument("--backends", type=_choices(BACKENDS), default=BACKENDS)
    p.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="S",
        help="stop measuring after S seconds; the rest is written as skipped",
    )
    p.add_argument("--time-cap", type=positive_float, default=1.0, metavar="S")
    p.add_argument("--no-gpm", action="store_true", help="skip the GPM windows")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rewrite summary.md and the plots of a run folder from its records",
    )
    p.add_argument("run_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="roofbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_predict(sub)
    _add_run(sub)
    _add_compare(sub)
    _add_model(sub)
    _add_report(sub)
    return parser


def _run(args, console: Console) -> int:
    from roofbench.bench.cases import sweep
    from roofbench.bench.run import run

    if args.resume and not (Path(args.resume) / "run.json").exists():
        raise ValueError(f"{args.resume} is not a run folder (no run.json)")
    cases = [c for c in sweep(args.sweep) if c.op in args.ops]
    folder = run(
        args.sweep,
        cases,
        args.out,
        impls=args.impls,
        console=console,
        time_cap_s=args.time_cap,
        resume=args.resume,
        gpm=not args.no_gpm,
    )
    console.print(f"wrote {folder}")
    print(folder)
    return 0


def _compare(args, console: Console) -> int:
    from roofbench.bench.compare import (
        compare,
        exit_code,
        load_results,
        parse_threshold,
        render_comparison,
    )

    threshold = parse_threshold(args.threshold)
    throttled_threshold = parse_threshold(args.throttled_threshold)
    for path in (args.base, args.new):
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
    comparisons = compare(
        load_results(args.base), load_results(args.new), threshold, throttled_threshold
    )
    render_comparison(comparisons, console)
    return exit_code(comparisons)


def _model(args, console: Console) -> int:
    from roofbench.bench.model import run_model
    from roofbench.theory.llm import load_model

    load_model(args.model)  # an unknown model or a bad config.json fails here, before any work
    folder = run_model(
        args.model,
        layers=args.layers,
        sweep=args.sweep,
        out_dir=args.out,
        backends=args.backends,
        time_budget_s=args.time_budget,
        console=console,
        time_cap_s=args.time_cap,
        gpm=not args.no_gpm,
    )
    print(folder)
    return 0


def _report(args, console: Console) -> int:
    from roofbench.bench.model import RECORDS_CSV
    from roofbench.bench.model_report import write_report
    from roofbench.bench.run import write_reports

    folder = Path(args.run_dir)
    if not (folder / "run.json").exists():
        raise ValueError(f"{folder} is not a run folder (no run.json)")
    if (folder / "records.csv").exists():
        write_reports(folder)
    elif (folder / RECORDS_CSV).exists():
        write_report(folder)
    else:
        raise ValueError(f"{folder} holds no records.csv or {RECORDS_CSV}")
    console.print(f"rewrote the summary and plots of {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "predict":
            from roofbench.bench.predict import run_predict

            return run_predict(args, console)
        commands = {"run": _run, "compare": _compare, "model": _model, "report": _report}
        return commands[args.command](args, console)
    except (ValueError, KeyError) as err:
        message = err.args[0] if err.args else str(err)
        print(f"roofbench {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
