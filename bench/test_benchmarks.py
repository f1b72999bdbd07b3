"""Every case of the sweep, ours and the reference, as pytest-benchmark benchmarks.

Each benchmark: the correctness gate (a failing kernel is never timed), the suite's own timing of
the case (CUDA events or graph replay, noise-stopped: the record), then pytest-benchmark rounds,
each advancing the GPU clock by one fresh GPU sample from the same timer (drawn back to back). The
record rides along in `extra_info`, and the test checks that pytest-benchmark's median is the
record's within 5%: both are GPU times of the same kernel.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from roofbench.bench.gpu_clock import GPU_CLOCK
from roofbench.bench.measure import WARM_UP_S, prepare, time_case
from roofbench.bench.records import Record
from roofbench.bench.timing import warm_up

ROUNDS = 30
AGREEMENT = 0.05


def test_kernel(benchmark, case, impl, run_context, record_writer):
    device = torch.device("cuda", torch.cuda.current_device())
    prepared = prepare(case, impl, run_context, device)
    if isinstance(prepared, Record):
        if record_writer is not None:
            record_writer.write(prepared)
        if prepared.status == "failed":
            pytest.fail(f"{case.id} {impl}: {prepared.reason}")
        pytest.skip(f"{case.id} {impl}: {prepared.reason}")

    timed = time_case(prepared, run_context)
    record = timed.record

    drawn: list[float] = []

    def one_sample() -> None:
        # The first round draws every round's sample back to back, as the record's samples were
        # drawn: a power-capped GPU clocks higher when each call is followed by an idle gap, so
        # one-call rounds with a synchronize between them would time a different GPU state.
        # Before the batch, the same warm-up with the same timer as before the record's samples.
        if not drawn:
            warm_up(timed.chosen.timer, WARM_UP_S)
            drawn.extend(timed.chosen.timer.measure(ROUNDS)[::-1])
        GPU_CLOCK.advance(drawn.pop())

    benchmark.pedantic(one_sample, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    benchmark.extra_info.update(dataclasses.asdict(record))
    if record_writer is not None:
        record_writer.write(record)

    pytest_median_s = benchmark.stats.stats.median
    assert pytest_median_s == pytest.approx(record.measured_s, rel=AGREEMENT), (
        f"pytest-benchmark median {pytest_median_s * 1e6:.2f} us vs CUDA-event median "
        f"{record.measured_s * 1e6:.2f} us"
    )
