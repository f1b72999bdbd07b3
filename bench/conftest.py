"""pytest-benchmark set-up for `pytest bench --benchmark-only [--sweep quick|full]`.

The benchmarks measure the same cases as `roofbench run`. pytest-benchmark's timer is replaced by
a clock that advances only by GPU time (`bench/gpu_clock.py`), so its statistics are GPU times
per call. Without a CUDA GPU every benchmark is skipped with a reason.
"""

from __future__ import annotations

import pytest
import torch

from roofbench.bench.core.gpu_clock import TIMER_NAME
from roofbench.bench.sweep.cases import SWEEPS, sweep

HAS_CUDA = torch.cuda.is_available()


def pytest_addoption(parser):
    group = parser.getgroup("roofbench")
    group.addoption("--sweep", choices=SWEEPS, default="quick", help="cases to benchmark")
    group.addoption("--ops", default="", help="comma-separated ops (default: all)")
    group.addoption(
        "--impls", default="", help="comma-separated implementations (default: all registered)"
    )
    group.addoption(
        "--plugin",
        action="append",
        default=[],
        help="a file or module that registers implementations (repeatable)",
    )
    group.addoption("--bench-records", default=None, help="also write the records to this CSV")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before pytest-benchmark builds its session, so every benchmark reads the GPU clock; a
    # timer the user named explicitly is left alone.
    option = getattr(config.option, "benchmark_timer", None)
    if option is not None and "perf_counter" in str(option):
        config.option.benchmark_timer = TIMER_NAME


def _selection(config):
    """(ops, impls) from --plugin, --ops and --impls, checked as `roofbench run` checks them."""
    from types import SimpleNamespace

    from roofbench.bench.cli import load_plugins, selected_ops_and_impls

    args = SimpleNamespace(
        plugin=config.getoption("plugin"),
        ops=config.getoption("ops"),
        impls=config.getoption("impls"),
    )
    try:
        load_plugins(args)
        return selected_ops_and_impls(args)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    from roofbench.bench.sweep.run import tasks

    ops, impls = _selection(metafunc.config)
    pairs = tasks(sweep(metafunc.config.getoption("sweep"), ops), impls)
    metafunc.parametrize(("case", "impl"), pairs, ids=[f"{case.id}-{impl}" for case, impl in pairs])


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU; torch sees none")
    for item in items:
        item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    """GPU, driver, clocks and library versions beside pytest-benchmark's CPU facts."""
    from roofbench.bench.core.identity import versions

    info = {"cuda_available": HAS_CUDA, **versions()}
    if HAS_CUDA:
        from roofbench.bench.core.telemetry import Telemetry

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
    from roofbench.bench.core.ceilings import measure_ceilings, measured_roof
    from roofbench.bench.core.gpu import resolve_gpu
    from roofbench.bench.core.identity import utc_now, versions
    from roofbench.bench.core.measure import RunContext
    from roofbench.bench.core.telemetry import Telemetry
    from roofbench.bench.core.timing import StopRule
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
    from roofbench.bench.core.records import RecordWriter

    with RecordWriter(path) as writer:
        yield writer
