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


SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: theory/, kernels/, bench/


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=SOURCE_ROOT
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def is_roofbench_checkout(root: Path) -> bool:
    """True when `root` is roofbench's own source tree (its pyproject names roofbench)."""
    pyproject = root / "pyproject.toml"
    try:
        return 'name = "roofbench"' in pyproject.read_text()
    except OSError:
        return False


# The tracked files whose edits change what a run measures or predicts.
SOURCE_PATHS = ("theory", "kernels", "bench", "pyproject.toml")


def commit() -> str:
    """roofbench's own source revision: $ROOFBENCH_COMMIT if set (a copied tree has no .git),
    else git's for the checkout roofbench runs from, but only when that checkout is roofbench's
    (an installed copy inside some other repository must not record that repository's), with
    `+dirty` when the sources differ from that commit (a tree copied over an older .git, or
    uncommitted edits: the code that ran is not the commit's)."""
    if os.environ.get("ROOFBENCH_COMMIT"):
        return os.environ["ROOFBENCH_COMMIT"]
    top = _git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != SOURCE_ROOT or not is_roofbench_checkout(SOURCE_ROOT):
        return "unknown"
    head = _git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    return head if changed == "" else head + "+dirty"


def version() -> str:
    """roofbench's installed version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("roofbench")
    except PackageNotFoundError:
        return "unknown"


def versions() -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "commit": commit(),
        "roofbench": version(),
    }


def roof_dict(roof: Roof | None) -> dict | None:
    return None if roof is None else dataclasses.asdict(roof)


def roof_from(data: dict | None) -> Roof | None:
    return None if data is None else Roof(**data)


def read_meta(folder: Path) -> dict:
    """The run.json of `folder`; ValueError, naming the file, when it cannot be read or is not
    a run's description (a JSON object)."""
    path = Path(folder) / "run.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a run's description")
    return meta


def write_meta(folder: Path, meta: dict) -> None:
    """run.json, replaced atomically (a reader never sees half of it)."""
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(folder / "run.json")


def unique_folder(parent: Path, name: str) -> Path:
    """A new folder parent/name, created here; a second run of the same name (the same second)
    gets -2, -3, ...: mkdir is the lock, so two runs never share a folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = parent / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise ValueError(f"{parent}: too many runs named {name}")
