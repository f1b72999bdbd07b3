"""The `roofbench` command: one sub-command per job, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from roofbench.bench.cli_args import (
    names_of,
    one_line,
    pick,
    positive_float,
    positive_int,
)
from roofbench.bench.comm.cli import add_comm_parser
from roofbench.bench.comm.tp_cli import add_tp_parser, tp_command
from roofbench.bench.commands import add_small_commands
from roofbench.theory.hardware import GPUS

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")


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
    table_dtypes = sorted({d for g in GPUS.values() for d in g.peaks_tflops})
    p.add_argument("--dtype", default="bf16", choices=table_dtypes)
    p.add_argument(
        "--no-causal", action="store_true", help="count the full N^2 attention, not the causal part"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="predict on this GPU's calibrated roofs (`roofbench calibrate --out`) and print "
        "the tiers",
    )


def _add_plugin(p) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="import a file or module that registers implementations (repeatable)",
    )


def load_plugins(args) -> None:
    """Import every --plugin (an import error is one line and exit code 2)."""
    from roofbench.kernels.catalog import load_plugins as load

    load(args.plugin)


def _add_run(sub) -> None:
    from roofbench.bench.sweep.cases import SWEEPS

    p = sub.add_parser(
        "run",
        help="measure a sweep on this GPU and write records, summary and plots",
        description="Measure every case of a sweep for every registered implementation (ours, "
        "the torch/cuBLAS/SDPA peers, a plugin's); write results/<gpu-slug>/<UTC time>/ "
        "(records.csv, run.json, summary.md, plots).",
    )
    p.add_argument("--sweep", choices=SWEEPS, default="quick")
    p.add_argument("--model", metavar="NAME|config.json", help="sweep this model's shapes")
    p.add_argument("--out", default="results", help="folder the run folder goes under")
    p.add_argument("--ops", help="comma-separated ops (default: all; `roofbench list` names them)")
    p.add_argument(
        "--impls",
        help="comma-separated implementations (default: every registered one; "
        "`roofbench list` names them)",
    )
    _add_plugin(p)
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=0.5,
        metavar="S",
        help="most seconds of sampling per measurement (default 0.5)",
    )
    p.add_argument("--no-gpm", action="store_true", help="skip the 100 ms GPM window per case")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish a run folder a killed run left")
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration of this GPU (`roofbench calibrate --out`); default: the cached one "
        "if under a day old, else calibrate first",
    )
    p.add_argument(
        "--no-calibration", action="store_true", help="no tiered model: the roofline only"
    )
    p.add_argument(
        "--no-observe",
        action="store_true",
        help="do not list the vendor libraries' kernels with torch.profiler (their plans)",
    )
    p.add_argument(
        "--ncu",
        type=positive_int,
        nargs="?",
        const=2,
        default=0,
        metavar="N",
        help="afterwards, profile N cases per op and implementation (default 2: the smallest "
        "and the largest) with Nsight Compute for DRAM bytes; skipped without ncu",
    )
    p.add_argument(
        "--gpu",
        metavar="SLUG",
        help=f"without a GPU: the GPU to predict for ({', '.join(GPUS)} or an NVML name; "
        "default h100-sxm); written under OUT/predicted/",
    )


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs (records CSV, run folder or pytest-benchmark JSON); exit 1 on a "
        "slowdown",
        description="Match cases of BASE and NEW; a case is slower when its median grew past "
        "its limit (the threshold, widened by a baseline's spread between sessions and by the "
        "two runs' own p20..p80 spreads) and the p20..p80 spreads do not overlap.",
    )
    p.add_argument("base", help="records CSV, run folder or pytest-benchmark JSON")
    p.add_argument("new", help="records CSV, run folder or pytest-benchmark JSON")
    p.add_argument("--threshold", default="5%", help="e.g. 5%% or 0.05 (default 5%%)")
    p.add_argument(
        "--throttled-threshold",
        default="15%",
        help="threshold for a case throttled (power or thermal cap) in either run: its clock "
        "moves between batches (default 15%%)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="a case of BASE that NEW lacks or skipped does not fail the comparison",
    )
    p.add_argument("--allow-other-gpu", action="store_true", help="compare runs of two GPUs")
    p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")


def _add_model(sub) -> None:
    from roofbench.bench.model.points import SWEEPS
    from roofbench.bench.model.run import ALL_PRESETS

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
    p.add_argument(
        "--impls",
        help="presets (triton,torch: one backend each) and/or per-op choices "
        "(decode_attention=mine,gemm=triton: one backend, other ops on their baselines); "
        "default: triton,torch",
    )
    p.add_argument(
        "--backends",
        type=names_of(ALL_PRESETS),
        help=f"presets only ({','.join(ALL_PRESETS)}; the older spelling of --impls)",
    )
    _add_plugin(p)
    p.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="S",
        help="stop measuring after S seconds; the rest is written as skipped",
    )
    p.add_argument("--time-cap", type=positive_float, default=1.0, metavar="S")
    p.add_argument("--no-gpm", action="store_true", help="skip the GPM windows")
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration of this GPU for the kernel-by-kernel tier (default: the cached one, "
        "else calibrate first); --no-calibration: none",
    )
    p.add_argument("--no-calibration", action="store_true", help="no kernel-by-kernel tier")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rewrite summary.md and the plots of a run folder from its records",
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--retier",
        action="store_true",
        help="print the tier table with the tiers recomputed by this version's model (on the "
        "run's calibration, or --calibration's); writes nothing",
    )
    p.add_argument("--calibration", metavar="FILE", help="with --retier: these constants")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="roofbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_predict(sub)
    _add_run(sub)
    _add_compare(sub)
    _add_model(sub)
    _add_report(sub)
    add_small_commands(sub, _add_plugin)
    add_comm_parser(sub)
    add_tp_parser(sub)
    return parser


def selected_ops_and_impls(args) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """--ops and --impls checked against the registry (after the plugins are loaded)."""
    from roofbench.kernels.catalog import impl_names, op_names

    ops = pick(args.ops, op_names(), "--ops") if args.ops else op_names()
    impls = pick(args.impls, impl_names(ops), "--impls") if args.impls else None
    return ops, impls


def _run(args, console: Console) -> int:
    from roofbench.bench.sweep.cases import run_cases
    from roofbench.bench.sweep.run import run

    if args.resume and not (Path(args.resume) / "run.json").exists():
        raise ValueError(f"{args.resume} is not a run folder (no run.json)")
    load_plugins(args)
    ops, impls = selected_ops_and_impls(args)
    cases, label = run_cases(args.sweep, ops, args.model)
    folder = run(
        label,
        cases,
        args.out,
        impls=impls,
        console=console,
        time_cap_s=args.time_cap,
        resume=args.resume,
        gpm=not args.no_gpm,
        calibration=False if args.no_calibration else args.calibration,
        gpu_slug=args.gpu,
        observe=not args.no_observe,
        ncu_cases=args.ncu,
        plugins=tuple(args.plugin or ()),
    )
    console.print(f"wrote {folder}")
    print(folder)
    return 0


def _compare(args, console: Console) -> int:
    from roofbench.bench.compare import (
        check_same_gpu,
        compare,
        exit_code,
        identity,
        load_results,
        parse_threshold,
        render_comparison,
        render_text,
    )

    threshold = parse_threshold(args.threshold)
    throttled_threshold = parse_threshold(args.throttled_threshold)
    base, new = load_results(args.base), load_results(args.new)
    check_same_gpu(base, new, args.allow_other_gpu)
    comparisons = compare(base, new, threshold, throttled_threshold)
    header = [
        f"{label}: {path} — " + ", ".join(f"{k} {v}" for k, v in identity(records).items())
        for label, path, records in (("base", args.base, base), ("new", args.new, new))
    ]
    if args.format == "table":
        render_comparison(comparisons, console, header)
    else:
        print(render_text(comparisons, args.format, header))
    return exit_code(comparisons, args.allow_missing)


def _model(args, console: Console) -> int:
    from roofbench.bench.model.run import BACKENDS, parse_impls, run_model
    from roofbench.theory.llm import load_model

    load_model(args.model)  # an unknown model or a bad config.json fails here, before any work
    load_plugins(args)
    if args.impls and args.backends:
        raise ValueError("give --impls or --backends, not both")
    backends = parse_impls(args.impls) if args.impls else (args.backends or BACKENDS)
    folder = run_model(
        args.model,
        layers=args.layers,
        sweep=args.sweep,
        out_dir=args.out,
        backends=backends,
        time_budget_s=args.time_budget,
        console=console,
        time_cap_s=args.time_cap,
        gpm=not args.no_gpm,
        calibration=False if args.no_calibration else args.calibration,
    )
    print(folder)
    return 0


def _report(args, console: Console) -> int:
    from roofbench.bench.comm.report import is_comm_run
    from roofbench.bench.comm.report import write_report as write_comm_report
    from roofbench.bench.comm.tp_report import is_tp_run
    from roofbench.bench.comm.tp_report import write_report as write_tp_report
    from roofbench.bench.model.report import write_report
    from roofbench.bench.model.run import RECORDS_CSV
    from roofbench.bench.sweep.run import write_reports

    folder = Path(args.run_dir)
    if not (folder / "run.json").exists():
        raise ValueError(f"{folder} is not a run folder (no run.json)")
    if args.retier:
        return _retier(folder, args.calibration)
    if is_comm_run(folder):
        write_comm_report(folder)
    elif is_tp_run(folder):
        write_tp_report(folder)
    elif (folder / "records.csv").exists():
        write_reports(folder)
    elif (folder / RECORDS_CSV).exists():
        write_report(folder)
    else:
        raise ValueError(f"{folder} holds no records.csv or {RECORDS_CSV}")
    console.print(f"rewrote the summary and plots of {folder}")
    return 0


def _calibrate(args, console: Console) -> int:
    from roofbench.bench.commands import calibrate_command

    return calibrate_command(args, console)


def _retier(folder: Path, calibration: str | None) -> int:
    from roofbench.bench.commands import retier_command

    return retier_command(folder, calibration)


def _baseline(args, console: Console) -> int:
    from roofbench.bench.commands import baseline_command

    return baseline_command(args, console)


def _comm(args, console: Console) -> int:
    from roofbench.bench.comm.cli import comm_command

    return comm_command(args, console)


def _list(args, console: Console) -> int:
    from roofbench.bench.commands import list_command

    load_plugins(args)
    return list_command(args, console)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "predict":
            from roofbench.bench.predict import run_predict

            return run_predict(args, console)
        commands = {
            "run": _run,
            "compare": _compare,
            "model": _model,
            "report": _report,
            "list": _list,
            "calibrate": _calibrate,
            "baseline": _baseline,
            "comm": _comm,
            "tp": tp_command,
        }
        return commands[args.command](args, console)
    except (ValueError, KeyError, OSError) as err:
        readable = isinstance(err, ValueError | KeyError) and not isinstance(err, UnicodeError)
        message = err.args[0] if err.args and readable else str(err)
        print(f"roofbench {args.command}: error: {one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException as err:
        from roofbench.bench.core.signals import Interrupted

        if isinstance(err, Interrupted):
            print(f"roofbench {args.command}: interrupted ({err})", file=sys.stderr)
            return err.code
        raise


if __name__ == "__main__":
    sys.exit(main())
