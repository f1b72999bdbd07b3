"""The `roofbench` sub-commands that are a few lines each: calibrate, list, report --retier."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def _add_baseline(sub) -> None:
    p = sub.add_parser(
        "baseline",
        help="build a baseline from several runs of unchanged code (their spread between sessions)",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="records CSV or pytest-benchmark JSON")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")


def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure this GPU's ceilings and fixed costs for the tiered model",
        description="Read, write and copy roofs, burst and sustained matmul peak, launch "
        "floors, DRAM round trip, exp2 and FMA throughput, dirty-L2 write-back.",
    )
    p.add_argument("--out", metavar="FILE", help="also write the calibration here")
    p.add_argument("--no-cache", action="store_true", help="measure even if a fresh one is cached")


def _add_list(sub, add_plugin) -> None:
    p = sub.add_parser(
        "list",
        help="list the ops and their implementations, and which can run here and why not",
    )
    add_plugin(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_small_commands(sub, add_plugin) -> None:
    """The parsers of list, calibrate and baseline (`add_plugin` adds --plugin to one)."""
    _add_list(sub, add_plugin)
    _add_calibrate(sub)
    _add_baseline(sub)


def calibrate_command(args, console: Console) -> int:
    import json

    import torch

    from roofbench.bench.core.calibrate import load_or_calibrate
    from roofbench.bench.core.telemetry import Telemetry

    if not torch.cuda.is_available():
        raise ValueError("calibrating needs a CUDA GPU; torch sees none")
    with Telemetry(torch.cuda.current_device()) as telemetry:
        doc = load_or_calibrate(None, telemetry, console, use_cache=not args.no_cache)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
        console.print(f"wrote {args.out}")
    return 0 if doc.get("calibration") else 1


def retier_command(folder: Path, calibration: str | None) -> int:
    import json

    from roofbench.bench.core.attribution import retier
    from roofbench.bench.core.calibrate import calibration_of
    from roofbench.bench.core.identity import read_meta
    from roofbench.bench.core.records import read_records
    from roofbench.bench.sweep.tiers_report import tier_table
    from roofbench.theory.roofline import Roof

    meta = read_meta(folder)
    doc = json.loads(Path(calibration).read_text()) if calibration else meta.get("calibration")
    if not doc or not doc.get("calibration"):
        raise ValueError(f"{folder} has no calibration: give --calibration FILE")
    if "configs" in meta:  # a model run: its steps predicted kernel by kernel
        from roofbench.bench.model.step_report import retier_lines

        print("\n".join(retier_lines(folder, doc)))
        return 0
    cal, datasheet = calibration_of(doc), Roof(**meta["datasheet_roof"])
    records = [
        retier(r, cal, datasheet)
        for r in read_records(folder / "records.csv")
        if r.status == "ok" and r.measured_s and r.op not in ("copy", "matmul")
    ]
    print("\n".join(tier_table(records)))
    return 0


def list_command(args, console: Console) -> int:
    from roofbench.bench.listing import listing, render_listing

    data = listing()
    if args.json:
        import json

        print(json.dumps(data, indent=2))
    else:
        render_listing(data, console)
    return 0


def baseline_command(args, console: Console) -> int:
    from roofbench.bench.baseline import build
    from roofbench.bench.compare import load_results
    from roofbench.bench.core.records import RecordWriter

    runs = [load_results(path) for path in args.runs]
    records = build(runs)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists: --force to replace it")
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    with RecordWriter(tmp) as writer:
        for record in records:
            writer.write(record)
    tmp.replace(out)
    spread = sorted(r.session_spread for r in records)
    console.print(
        f"wrote {out}: {len(records)} cases from {len(runs)} runs; spread between sessions "
        f"median {spread[len(spread) // 2]:.1%}, max {spread[-1]:.1%}",
        highlight=False,
    )
    return 0
