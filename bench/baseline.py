"""`roofbench baseline RUN... --out FILE`: one baseline from several runs of unchanged code.

Each case measured by at least MIN_SESSIONS of the runs becomes one record: the median of the
runs' medians, the envelope of their p20..p80 spreads, the number of runs (`sessions`) and the
spread of their medians (`session_spread` = max / min - 1): how far the same code moves between
sessions (another process, another hour, another card of the same model). `roofbench compare`
holds a case to at least SESSION_FACTOR x that spread, so repeated runs of unchanged code flag
nothing while a slowdown larger than the sessions' own spread is still caught.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict

from roofbench.bench.core.records import Record

MIN_SESSIONS = 2


def build(runs: list[list[Record]], min_sessions: int = MIN_SESSIONS) -> list[Record]:
    """The baseline records of `runs` (each a list of one run's records); ValueError when the
    runs are of different GPUs or fewer than `min_sessions` are given."""
    if len(runs) < min_sessions:
        raise ValueError(f"a baseline needs at least {min_sessions} runs, got {len(runs)}")
    gpus = {r.gpu for run in runs for r in run if r.status == "ok" and r.gpu}
    if len(gpus) > 1:
        raise ValueError(f"runs of different GPUs ({', '.join(sorted(gpus))}) make no baseline")
    by_key: dict[tuple, list[Record]] = defaultdict(list)
    order: list[tuple] = []
    for run in runs:
        for r in run:
            if r.status != "ok" or not r.measured_s or r.measured_s <= 0:
                continue
            key = (r.case, r.impl, r.dtype, r.op)
            if key not in by_key:
                order.append(key)
            by_key[key].append(r)
    out = []
    for key in order:
        group = by_key[key]
        if len(group) < min_sessions:
            continue
        medians = [r.measured_s for r in group]
        first = group[0]
        out.append(
            dataclasses.replace(
                first,
                measured_s=statistics.median(medians),
                p20_s=min(r.p20_s if r.p20_s is not None else r.measured_s for r in group),
                p80_s=max(r.p80_s if r.p80_s is not None else r.measured_s for r in group),
                throttled=any(bool(r.throttled) for r in group),
                sessions=len(group),
                session_spread=max(medians) / min(medians) - 1,
                commit=", ".join(sorted({r.commit for r in group if r.commit})),
                timestamp=max(r.timestamp for r in group),
            )
        )
    if not out:
        raise ValueError(f"no case was measured by {min_sessions} of the runs")
    return out
