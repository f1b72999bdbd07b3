"""bench/core/calibrate.py without a GPU: when a calibration document is fresh for a device,
where it is cached, how its constants become a `Calibration`, and which document
`load_or_calibrate` hands back (a given file, a cached one, or a new calibration)."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from roofbench.bench.core import calibrate as cal_mod
from roofbench.theory.tiers import Calibration

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
DEVICE = {"uuid": "GPU-1", "driver": "570.1", "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619}
# One made-up calibration for every test of the tiers (H200-like round figures).
CAL = Calibration.from_dict(
    json.loads(
        (Path(__file__).resolve().parents[2] / "data" / "made_up_calibration.json").read_text()
    )
)


def doc_of(device=DEVICE, created=CREATED, version=cal_mod.VERSION):
    return {
        "version": version,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": dict(device),
        "calibration": CAL.to_dict(),
    }


def test_a_matching_doc_within_a_day_is_fresh():
    assert cal_mod.is_fresh(doc_of(), DEVICE, CREATED + timedelta(hours=23)) is None


@pytest.mark.parametrize("key", ["uuid", "driver", "max_sm_clock_mhz", "max_mem_clock_mhz"])
def test_another_device_field_is_named_in_the_reason(key):
    other = DEVICE | {key: "other"}
    reason = cal_mod.is_fresh(doc_of(device=other), DEVICE, CREATED)
    assert reason is not None and key in reason


def test_another_version_and_an_old_doc_are_not_fresh():
    reason = cal_mod.is_fresh(doc_of(version=cal_mod.VERSION + 1), DEVICE, CREATED)
    assert reason is not None and "version" in reason
    later = CREATED + timedelta(seconds=cal_mod.MAX_AGE_S + 3600)
    reason = cal_mod.is_fresh(doc_of(), DEVICE, later)
    assert reason is not None and "old" in reason


def test_the_cache_lies_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cal_mod.cache_path("GPU-1")
    assert path.parent == tmp_path / "roofbench" and "GPU-1" in path.name


def test_calibration_of_reads_the_theory_constants():
    assert cal_mod.calibration_of(doc_of()) == CAL


def test_theory_constants_take_each_probe_value_and_the_device_facts():
    names = [
        "read_bytes_per_s", "write_bytes_per_s", "copy_bytes_per_s", "matmul_burst_flops",
        "matmul_sustained_flops", "launch_s", "launch_stream_s", "dram_latency_s",
        "dram_latency_loaded_s", "exp2_per_clock_per_sm", "fma_per_clock_per_sm", "writeback_s",
    ]  # fmt: skip
    # A distinct value per constant, so a swapped pair of fields shows.
    constants = {name: {"value": float(i + 1), "unit": "x", "method": "m"}
                 for i, name in enumerate(names)}  # fmt: skip
    constants["kernel_fixed_s"] = {"value": 2e-6, "bytes": [2**18, 2**19], "excess_s": [1e-6, 3e-6]}
    constants["cta_read_bytes_per_s"] = {"value": 1e10, "programs": [1, 2], "rates": [1e10, 2e10]}
    device = DEVICE | {"name": "H200", "sms": 132, "l2_bytes": 60 * 2**20}
    out = cal_mod._theory_constants(constants, device)
    for i, name in enumerate(names):
        assert out[name] == i + 1
    assert out["fixed_bytes"] == [2.0**18, 2.0**19] and out["fixed_excess_s"] == [1e-6, 3e-6]
    assert out["cta_programs"] == [1.0, 2.0] and out["cta_read_bytes_per_s"] == [1e10, 2e10]
    assert out["sms"] == 132 and out["l2_bytes"] == 60 * 2**20
    assert out["sm_clock_hz"] == pytest.approx(1980e6)
    assert "H200" in out["source"]
    assert Calibration.from_dict(out).read_bytes_per_s == 1.0
    # The mma.sync peak is optional: None where its probe did not run, else its value.
    assert out["mma_sync_flops"] is None
    constants["mma_sync_flops"] = {"value": 5e14, "unit": "FLOP/s", "method": "m"}
    assert cal_mod._theory_constants(constants, device)["mma_sync_flops"] == 5e14


def test_only_a_failed_optional_probe_leaves_the_calibration_whole():
    assert cal_mod.whole({})
    assert cal_mod.whole({"mma_sync": "RuntimeError: no configuration ran mma.sync"})
    assert not cal_mod.whole({"matmul": "OutOfMemoryError: ...", "mma_sync": "..."})


class FakeTelemetry:
    def info(self):
        return SimpleNamespace(uuid="GPU-1", driver_version="570.1", max_sm_clock_mhz=1980,
                               max_mem_clock_mhz=2619)  # fmt: skip


def now_doc(**device):
    return doc_of(device=DEVICE | device, created=datetime.now(timezone.utc))


def refuse_to_calibrate(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("calibrate() was called")

    monkeypatch.setattr(cal_mod, "calibrate", fail)


def test_a_given_fresh_file_is_returned(tmp_path, monkeypatch):
    refuse_to_calibrate(monkeypatch)
    path = tmp_path / "cal.json"
    doc = now_doc()
    path.write_text(json.dumps(doc))
    assert cal_mod.load_or_calibrate(str(path), FakeTelemetry(), None) == doc


def test_a_given_file_only_too_old_is_still_used(tmp_path, monkeypatch):
    refuse_to_calibrate(monkeypatch)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc_of(created=datetime.now(timezone.utc) - timedelta(days=3))))
    assert cal_mod.load_or_calibrate(str(path), FakeTelemetry(), None)["device"] == DEVICE


def test_a_given_file_of_another_driver_is_refused(tmp_path, monkeypatch):
    refuse_to_calibrate(monkeypatch)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(now_doc(driver="535.0")))
    with pytest.raises(ValueError, match="driver"):
        cal_mod.load_or_calibrate(str(path), FakeTelemetry(), None)


def test_a_fresh_cached_doc_is_used_without_calibrating(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    refuse_to_calibrate(monkeypatch)
    cached = cal_mod.cache_path("GPU-1")
    cached.parent.mkdir(parents=True)
    doc = now_doc()
    cached.write_text(json.dumps(doc))
    assert cal_mod.load_or_calibrate(None, FakeTelemetry(), None) == doc


def test_a_stale_cache_is_replaced_by_a_new_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = cal_mod.cache_path("GPU-1")
    cached.parent.mkdir(parents=True)
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    cached.write_text(json.dumps(doc_of(created=two_days_ago)))
    new = now_doc()
    monkeypatch.setattr(cal_mod, "calibrate", lambda telemetry, console: new)
    assert cal_mod.load_or_calibrate(None, FakeTelemetry(), None) == new
    assert json.loads(cached.read_text()) == new
