"""Formatting shared by every report: numbers, percentages, Markdown tables, robust medians."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

NONE = "—"


def fmt(value: float | None, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    return format(value * scale, spec)


def pct(value: float | None) -> str:
    return fmt(value, ".1f", 100.0) + ("%" if value is not None else "")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _kept(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def median(values: Iterable[float | None]) -> float | None:
    kept = _kept(values)
    return float(np.median(kept)) if kept else None


def quantile(values: Iterable[float | None], q: float) -> float | None:
    kept = _kept(values)
    return float(np.quantile(kept, q)) if kept else None
