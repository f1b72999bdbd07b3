"""The `roofbench` sub-commands that are a few lines each: calibrate, list, report --retier."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


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
    from roofbench.bench.core.records import read_records
    from roofbench.bench.sweep.tiers_report import tier_table
    from roofbench.theory.roofline import Roof

    meta = json.loads((folder / "run.json").read_text())
    doc = json.loads(Path(calibration).read_text()) if calibration else meta.get("calibration")
    if not doc or not doc.get("calibration"):
        raise ValueError(f"{folder} has no calibration: give --calibration FILE")
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
