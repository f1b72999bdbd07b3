"""pytest-benchmark set-up for `pytest bench --benchmark-only [--sweep quick|full]`.

The benchmarks measure the same cases as `roofbench run`. pytest-benchmark's timer is replaced by
a clock that advances only by GPU time (`bench/gpu_clock.py`), so its statistics are GPU times
per call. Without a CUDA GPU every benchmark is skipped with a reason.
"""

from __future__ import annotations

import pytest
import torch

from roofbench.bench.cases import IMPLS, OPS, SWEEPS, sweep
from roofbench.bench.gpu_clock import TIMER_NAME

HAS_CUDA = torch.cuda.is_available()


def pytest_addoption(parser):
    group = parser.getgroup("roofbench")
    group.addoption("--sweep", choices=SWEEPS, default="quick", help="cases to benchmark")
    group.addoption(
        "--ops", default=",".join(OPS), help=f"comma-separated subset of {', '.join(OPS)}"
    )
    group.addoption("--bench-records", default=None, help="also write the records to this CSV")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before pytest-benchmark builds its session, so every benchmark reads the GPU clock; a
    # timer the user named explicitly is left alone.
    option = getattr(config.option, "benchmark_timer", None)
    if option is not None and "perf_counter" in str(option):
        config.option.benchmark_timer = TIMER_NAME


def _ops(config) -> list[str]:
    picked = [op.strip() for op in config.getoption("ops").split(",") if op.strip()]
    wrong = [op for op in picked if op not in OPS]
    if wrong:
        raise pytest.UsageError(f"--ops: unknown {', '.join(wrong)} (known: {', '.join(OPS)})")
    return picked


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    ops = _ops(metafunc.config)
    cases = [c for c in sweep(metafunc.config.getoption("sweep")) if c.op in ops]
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])
    metafunc.parametrize("impl", IMPLS)


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU; torch sees none")
    for item in items:
        item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    """GPU, driver, clocks and library versions beside pytest-benchmark's CPU facts."""
    from roofbench.bench.run import versions

    info = {"cuda_available": HAS_CUDA, **versions()}
    if HAS_CUDA:
        from roofbench.bench.telemetry import Telemetry

        info["cuda"] = torch.version.cuda
        info["name"] = torch.cuda.get_device_name()
        with Telemetry(torch.cuda.current_device()) as telemetry:
            nvml = telemetry.info()
            info |= {
                "nvml_name": nvml.name,
                "uuid": nvml.uuid,
                "driver": nvml.driver_version,
                "max_sm_clock_mhz": nvml.max_sm_clock_mhz,
                "max_mem_clock_mhz": nvml.max_mem_clock_mhz,
                "power_limit_w": nvml.power_limit_w,
                "theoretical_gbps": nvml.theoretical_gbps,
                "nvml_missing": nvml.missing,
            }
    machine_info["gpu"] = info


@pytest.fixture(scope="session")
def run_context(request):
    """Ceilings measured once per session; the roofs every benchmark's record is held against."""
    from roofbench.bench.ceilings import measure_ceilings, measured_roof
    from roofbench.bench.gpu import resolve_gpu
    from roofbench.bench.measure import RunContext
    from roofbench.bench.run import utc_now, versions
    from roofbench.bench.telemetry import Telemetry
    from roofbench.bench.timing import StopRule
    from roofbench.theory.roofline import Roof

    telemetry = Telemetry(torch.cuda.current_device())
    ceilings = measure_ceilings(telemetry=telemetry)
    identity = {
        "gpu": telemetry.info().name or torch.cuda.get_device_name(),
        "driver": telemetry.info().driver_version or "",
        "sweep": request.config.getoption("sweep"),
        "timestamp": utc_now(),
        **versions(),
    }
    ctx = RunContext(
        Roof.from_spec(resolve_gpu(None)),
        measured_roof(ceilings),
        telemetry,
        StopRule(max_time_s=0.5),
        identity,
    )
    yield ctx
    telemetry.close()


@pytest.fixture(scope="session")
def record_writer(request):
    path = request.config.getoption("bench_records")
    if not path:
        yield None
        return
    from roofbench.bench.records import RecordWriter

    with RecordWriter(path) as writer:
        yield writer
