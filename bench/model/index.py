"""A model run's records, looked up by (model, phase, backend, batch, length), and the run's
configs and roof as run.json holds them: what the summary and the plots both read."""

from __future__ import annotations

from collections.abc import Sequence

from roofbench.bench.core.records import Record
from roofbench.bench.model.points import PHASES
from roofbench.theory.llm import ModelConfig
from roofbench.theory.roofline import Roof


def predicted_s(record: Record) -> float | None:
    """The prediction on the measured roof, or on the datasheet roof when none was measured."""
    return record.predicted_s if record.predicted_s is not None else record.predicted_datasheet_s


def measured_s(record: Record | None) -> float | None:
    if record is None or record.status != "ok" or not record.measured_s:
        return None
    return record.measured_s


def model_of(record: Record) -> str:
    return record.case.split("/")[0]


class RecordIndex:
    """Records of one run looked up by (model, op, impl, batch, seq)."""

    def __init__(self, records: Sequence[Record]):
        self.records = [r for r in records if r.op in PHASES]
        self.by_key = {(model_of(r), r.op, r.impl, r.batch, r.seq): r for r in self.records}
        self.all_impls = list(dict.fromkeys(r.impl for r in self.records))
        self.measured = any(measured_s(r) for r in self.records)
        # Tables and plots show measured columns only when something was measured.
        self.impls = self.all_impls if self.measured else []

    def get(self, model: str, op: str, impl: str, batch: int, seq: int) -> Record | None:
        return self.by_key.get((model, op, impl, batch, seq))

    def shapes(self, model: str, op: str) -> list[tuple[int, int]]:
        return sorted(
            {(r.batch, r.seq) for r in self.records if model_of(r) == model and r.op == op}
        )

    def any(self, model: str, op: str, batch: int, seq: int) -> Record | None:
        """A record of the shape (any implementation): its prediction is the same for all."""
        for impl in self.all_impls:
            record = self.get(model, op, impl, batch, seq)
            if record is not None:
                return record
        return None


def configs_of(meta: dict) -> dict[str, ModelConfig]:
    return {k: ModelConfig(**v) for k, v in meta["configs"].items()}


def roof_of(meta: dict) -> tuple[Roof, str]:
    """The roof predictions are on: measured if there is one, else the datasheet's."""
    if meta.get("measured_roof"):
        return Roof(**meta["measured_roof"]), "measured"
    return Roof(**meta["datasheet_roof"]), "datasheet"


def naive_series(index: RecordIndex, model: str, impl: str | None) -> dict[str, tuple[list, list]]:
    """{"naive", "cached"} -> (lengths, times): measured for `impl`, predicted for None."""
    lengths = [n for b, n in index.shapes(model, "naive_step") if b == 1]
    out = {}
    for key, op in (("naive", "naive_step"), ("cached", "tbt")):
        times = []
        for n in lengths:
            if impl is None:
                ref = index.any(model, op, 1, n)
                times.append(predicted_s(ref) if ref else None)
            else:
                times.append(measured_s(index.get(model, op, impl, 1, n)))
        out[key] = (lengths, times)
    return out
