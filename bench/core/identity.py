"""Who measured what, when: versions, roofbench's own commit, UTC time, and run.json I/O."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from roofbench.theory.roofline import Roof


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def commit() -> str:
    """The source revision: $ROOFBENCH_COMMIT if set (a copied tree has no .git), else git's."""
    if os.environ.get("ROOFBENCH_COMMIT"):
        return os.environ["ROOFBENCH_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def versions() -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {"torch": torch.__version__, "triton": triton_version, "commit": commit()}


def roof_dict(roof: Roof | None) -> dict | None:
    return None if roof is None else dataclasses.asdict(roof)


def roof_from(data: dict | None) -> Roof | None:
    return None if data is None else Roof(**data)


def write_meta(folder: Path, meta: dict) -> None:
    """run.json, replaced atomically (a reader never sees half of it)."""
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(folder / "run.json")
