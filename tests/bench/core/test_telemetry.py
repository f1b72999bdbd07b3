"""bench.telemetry against a fake pynvml module: decoding, throttle verdicts, missing NVML/GPM."""

from __future__ import annotations

import sys
import time
import types
from types import SimpleNamespace

import pytest

from roofbench.bench.core import nvml_facts as facts
from roofbench.bench.core import telemetry as tm
from roofbench.bench.core.nvml_facts import Sample, decode_reasons, dram_gbps, summarize
from roofbench.bench.core.telemetry import Telemetry


class FakeNVMLError(Exception):
    pass


def fake_nvml(
    *,
    init_error: bool = False,
    gpm_supported: bool = True,
    sm_clock_mhz: int = 1980,
    reasons: int = 0,
    power_supported: bool = True,
    dram_util_pct: float = 90.0,
) -> types.ModuleType:
    """A stand-in for pynvml: an H100 SXM (5120-bit bus, 2619 MHz memory, 1980 MHz SM)."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.NVML_SUCCESS = 0
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM, nvml.NVML_TEMPERATURE_GPU = 1, 2, 0
    nvml.nvmlClocksEventReasonSwPowerCap = 0x4
    nvml.NVML_GPM_METRIC_SM_OCCUPANCY = 3
    nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5
    nvml.NVML_GPM_METRIC_DRAM_BW_UTIL = 10
    nvml.NVML_GPM_METRICS_GET_VERSION = 1
    nvml.calls = []

    def init():
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def refuse(*_):
        raise FakeNVMLError("Not Supported")

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nvml.nvmlDeviceGetHandleByUUID = lambda u: "gpu0"
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetUUID = lambda h: "GPU-1234"
    nvml.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, c: {1: 1980, 2: 2619}[c]
    nvml.nvmlDeviceGetClockInfo = lambda h, c: {1: sm_clock_mhz, 2: 2619}[c]
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nvml.nvmlDeviceGetMemoryBusWidth = lambda h: 5120
    nvml.nvmlDeviceGetPowerUsage = (lambda h: 650_000) if power_supported else refuse
    nvml.nvmlDeviceGetTemperature = lambda h, s: 61
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: reasons

    nvml.nvmlGpmQueryDeviceSupport = lambda h: SimpleNamespace(isSupportedDevice=gpm_supported)
    nvml.nvmlGpmSampleAlloc = lambda: SimpleNamespace(taken_at=None)

    def sample_get(handle, sample):
        sample.taken_at = time.perf_counter()
        nvml.calls.append("sample")

    nvml.nvmlGpmSampleGet = sample_get
    nvml.nvmlGpmSampleFree = lambda s: nvml.calls.append("free")

    class MetricsGet:
        def __init__(self):
            self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(8)]

    values = {10: dram_util_pct, 5: 12.5, 3: 40.0}

    def metrics_get(request):
        assert request.sample1 is not request.sample2
        for metric in request.metrics[: request.numMetrics]:
            metric.value = values[metric.metricId]
        return request

    nvml.c_nvmlGpmMetricsGet_t = MetricsGet
    nvml.nvmlGpmMetricsGet = metrics_get
    return nvml


@pytest.fixture
def use_nvml(monkeypatch):
    def install(**kwargs):
        nvml = fake_nvml(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        return nvml

    return install


# --- decoding and verdicts (pure) --------------------------------------------------------------


def test_decode_reasons_names_each_bit():
    assert decode_reasons(0) == ()
    assert decode_reasons(0x4) == ("sw_power_cap",)
    assert decode_reasons(0x1 | 0x40 | 0x80) == (
        "gpu_idle",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    )
    assert decode_reasons(0x100 | 0x10 | 0x2 | 0x8 | 0x20) == (
        "applications_clocks_setting",
        "hw_slowdown",
        "sync_boost",
        "sw_thermal_slowdown",
        "display_clock_setting",
    )
    assert decode_reasons(0x4 | 0x400) == ("sw_power_cap", "unknown_0x400")


def test_decode_reasons_uses_module_constants_where_present():
    module = SimpleNamespace(nvmlClocksEventReasonSwPowerCap=0x800)
    assert decode_reasons(0x800, module) == ("sw_power_cap",)
    assert decode_reasons(0x4, module) == ("unknown_0x4",)


def busy(sm_mhz: int, mask: int = 0, power_w: float = 500.0, temp_c: int = 60) -> Sample:
    return Sample(0.0, sm_mhz, 2619, power_w, temp_c, mask, decode_reasons(mask))


def test_summary_statistics():
    samples = [busy(1980, 0, 400, 50), busy(1900, 0, 690, 70), busy(1950, 0x10, 600, 65)]
    s = summarize(samples, 1980)
    assert s.samples == 3
    assert s.median_sm_clock_mhz == 1950
    assert s.min_sm_clock_mhz == 1900
    assert s.max_power_w == 690
    assert s.max_temperature_c == 70
    assert s.reasons == ("sync_boost",)
    assert s.throttled is False and s.throttle_reason == ""


def test_throttled_by_clock():
    s = summarize([busy(1980), busy(1400), busy(1970)], 1980)  # 1400 / 1980 = 71%
    assert s.throttled is True
    assert "1400 MHz" in s.throttle_reason and "71%" in s.throttle_reason


def test_clock_at_three_quarters_is_not_throttled():
    assert summarize([busy(1485)], 1980).throttled is False  # exactly 75%


def test_throttled_by_reason_at_full_clock():
    s = summarize([busy(1980), busy(1980, mask=0x4 | 0x8)], 1980)
    assert s.throttled is True
    assert s.reasons == ("sw_power_cap", "hw_slowdown")
    assert "sw_power_cap, hw_slowdown" in s.throttle_reason


def test_idle_samples_do_not_count_as_throttled():
    idle = busy(345, mask=0x1)
    s = summarize([idle, busy(1980), idle], 1980)
    assert s.throttled is False
    assert s.min_sm_clock_mhz == 1980
    assert "gpu_idle" in s.reasons


def test_unknown_verdict_without_clock_or_reasons():
    blind = Sample(0.0, None, None, None, None, None)
    assert summarize([blind], 1980).throttled is None
    assert summarize([], 1980).missing == "no samples taken"


def test_dram_gbps_from_utilisation():
    assert dram_gbps(90.0, 3352.3) == pytest.approx(3017.07)
    assert dram_gbps(None, 3352.3) is None
    assert dram_gbps(50.0, None) is None


# --- Telemetry on a fake pynvml ----------------------------------------------------------------


def test_missing_pynvml_gives_empty_results_with_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    tel = Telemetry()
    assert not tel.available
    assert "not installed" in tel.missing
    assert tel.sample() is None
    assert tel.info().missing == tel.missing and tel.info().name is None
    with tel.window() as win:
        pass
    assert win.summary().missing == tel.missing
    assert win.summary().throttled is None
    assert tel.gpm_window(lambda: None).missing == tel.missing


def test_nvml_init_failure_gives_reason(use_nvml):
    use_nvml(init_error=True)
    tel = Telemetry()
    assert not tel.available
    assert "Driver Not Loaded" in tel.missing


def test_device_info(use_nvml):
    use_nvml()
    with Telemetry() as tel:
        info = tel.info()
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.uuid == "GPU-1234"
    assert info.driver_version == "580.159.04"
    assert (info.max_sm_clock_mhz, info.max_mem_clock_mhz) == (1980, 2619)
    assert info.power_limit_w == 700.0
    assert info.bus_width_bits == 5120
    assert info.theoretical_gbps == pytest.approx(3352.3, abs=0.1)
    assert info.missing is None


def test_sample_reads_every_field_and_tolerates_an_unsupported_one(use_nvml):
    use_nvml(reasons=0x4, power_supported=False, sm_clock_mhz=1365)
    with Telemetry() as tel:
        s = tel.sample()
    assert s.sm_clock_mhz == 1365 and s.mem_clock_mhz == 2619
    assert s.power_w is None  # NVML said Not Supported; the rest still came
    assert s.temperature_c == 61
    assert s.reasons_mask == 0x4 and s.reasons == ("sw_power_cap",)


def test_sample_prefers_instant_power(use_nvml):
    nvml = use_nvml()  # the averaged reading says 650 W
    nvml.NVML_FI_DEV_POWER_INSTANT = 186
    reading = SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=126_520))
    nvml.nvmlDeviceGetFieldValues = lambda h, ids: [reading] if ids == [186] else []
    with Telemetry() as tel:
        assert tel.sample().power_w == pytest.approx(126.52)
        reading.nvmlReturn = 3  # Not Supported: fall back to the averaged reading
        assert tel.sample().power_w == 650.0


def test_window_samples_in_background_and_flags_power_cap(use_nvml):
    use_nvml(reasons=0x4, sm_clock_mhz=1365)
    with Telemetry(interval_s=0.005) as tel, tel.window() as win:
        time.sleep(0.05)
    summary = win.summary()
    assert summary.samples >= 4  # one at each end plus the thread's
    assert summary.median_sm_clock_mhz == 1365
    assert summary.max_power_w == 650.0
    assert summary.throttled is True
    assert "sw_power_cap" in summary.throttle_reason and "69%" in summary.throttle_reason


def test_close_shuts_nvml_down(use_nvml):
    nvml = use_nvml()
    tel = Telemetry()
    tel.close()
    assert nvml.calls == ["shutdown"]
    assert not tel.available


def test_gpm_unsupported_gives_reason(use_nvml):
    use_nvml(gpm_supported=False)
    with Telemetry() as tel:
        result = tel.gpm_window(lambda: None, sync=lambda: None)
    assert result.missing == "GPM is not supported on this GPU"
    assert result.dram_bw_util_pct is None and result.dram_gbps is None


def test_gpm_window_repeats_fn_past_min_and_converts_utilisation(use_nvml):
    nvml = use_nvml(dram_util_pct=90.0)
    now = [0.0]
    calls = []

    def kernel():  # 1 ms of "GPU time" per call on the fake clock
        calls.append(1)
        now[0] += 1e-3

    with Telemetry() as tel:
        result = tel.gpm_window(
            kernel, min_s=0.1, lead_s=0.05, sync=lambda: None, clock=lambda: now[0]
        )
    assert result.missing is None
    assert result.window_s >= 0.1
    assert result.calls >= 100
    # One estimate call and >= 50 lead-in calls ran before the first GPM sample.
    assert len(calls) >= result.calls + 51
    assert result.dram_bw_util_pct == 90.0
    assert result.any_tensor_util_pct == 12.5
    assert result.sm_occupancy_pct == 40.0
    assert result.dram_gbps == pytest.approx(0.9 * 3352.3, abs=0.1)
    assert result.per_call_s == pytest.approx(1e-3)  # the fake kernel's time
    assert tm.GpmResult().per_call_s is None
    assert nvml.calls.count("sample") == 2 and nvml.calls.count("free") == 2


def test_gpm_sampling_error_gives_reason(use_nvml):
    nvml = use_nvml()

    def broken(handle, sample):
        raise FakeNVMLError("Insufficient Permissions")

    nvml.nvmlGpmSampleGet = broken
    with Telemetry() as tel:
        result = tel.gpm_window(lambda: None, min_s=0.0, sync=lambda: None)
    assert "Insufficient Permissions" in result.missing
    assert nvml.calls.count("free") == 2


def test_reason_names_cover_the_documented_bits():
    names = [name for name, _, _ in facts.REASON_BITS]
    assert len(set(bit for _, _, bit in facts.REASON_BITS)) == len(names) == 9
    assert set(names) >= facts.THROTTLE_REASONS


@pytest.mark.gpu
def test_real_nvml_matches_the_cuda_device_and_samples_a_busy_gpu():
    import torch

    with Telemetry(0, interval_s=0.01) as tel:
        if not tel.available:
            pytest.skip(f"NVML unavailable: {tel.missing}")
        info = tel.info()
        assert info.uuid.endswith(str(torch.cuda.get_device_properties(0).uuid))
        assert info.max_sm_clock_mhz > 500 and info.theoretical_gbps > 100
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        with tel.window() as win:
            for _ in range(200):
                a @ a
            torch.cuda.synchronize()
    summary = win.summary()
    assert summary.samples >= 2 and summary.missing is None
    assert 100 < summary.median_sm_clock_mhz <= info.max_sm_clock_mhz
    assert summary.max_power_w > 0
