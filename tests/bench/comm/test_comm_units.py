"""bench.comm's parts on one process: sweeps and sizes, the environment kept for every rank,
the float64 reference each rank checks its output against, and the records' bandwidths."""

import dataclasses

import pytest
import torch

from roofbench.bench.comm import cases, collectives, records, timing
from roofbench.bench.core.nvml_facts import TelemetrySummary
from roofbench.bench.core.sampling import TimingStats
from roofbench.theory import comm


def test_sweeps_are_powers_of_two_from_8_bytes_to_8_gib():
    full, quick = cases.SWEEPS["full"], cases.SWEEPS["quick"]
    assert full[0] == 8 and full[-1] == 8 * 2**30 and len(full) == 31
    assert all(b == 2 * a for a, b in zip(full, full[1:], strict=False))
    assert set(quick) < set(full) and 2**30 in quick and quick[-1] == 8 * 2**30
    assert cases.sizes("quick", 4096) == (8, 64, 512, 4096)
    with pytest.raises(ValueError, match="at most 4 B"):
        cases.sizes("quick", 4)


@pytest.mark.parametrize(
    "text,size", [("4096", 4096), ("4K", 4096), ("256M", 2**28), ("1GiB", 2**30)]
)
def test_sizes_read_in_binary_units(text, size):
    assert cases.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-4K", "4X", "K"])
def test_a_bad_size_is_named(text):
    with pytest.raises(ValueError, match="not a positive number of bytes"):
        cases.parse_size(text)


def test_multicast_stays_off_and_a_value_set_is_kept():
    env = {"NCCL_NVLS_ENABLE": "0", "OTHER": "x"}
    kept = cases.keep_multicast_off(env)
    assert kept == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }
    assert env["OTHER"] == "x" and set(kept) <= set(env)
    env = {"NVSHMEM_DISABLE_NVLS": "2"}  # never overwritten nor removed
    assert cases.keep_multicast_off(env)["NVSHMEM_DISABLE_NVLS"] == "2"


def test_a_case_names_its_collective_size_dtype_and_ranks_and_refuses_what_does_not_split():
    case = cases.CommCase("all_gather", 8, "bf16", 8)
    assert case.id == "comm_all_gather-8B-bf16-8gpus" and case.op == "comm_all_gather"
    assert "does not split over 8" in case.refuses()  # 4 elements over 8 ranks
    assert cases.CommCase("all_reduce", 8, "bf16", 8).refuses() is None
    assert "2 ranks" in cases.CommCase("send_recv", 8, "fp32", 1).refuses()
    with pytest.raises(ValueError, match="unknown broadcast"):
        cases.cases("quick", ("broadcast",), "bf16", 2)


def _simulated_outputs(collective: str, ranks: int, count: int, seed: int, dtype: str):
    """What each rank must hold after the collective, computed here with plain torch ops."""
    inputs = [
        collectives.draw_input(collective, ranks, count, r, seed, dtype, "cpu").double()
        for r in range(ranks)
    ]
    if collective == "all_reduce":
        return [sum(inputs)] * ranks
    if collective == "all_gather":
        return [torch.cat(inputs)] * ranks
    if collective == "reduce_scatter":
        return list(sum(inputs).chunk(ranks))
    if collective == "all_to_all":
        chunks = [x.chunk(ranks) for x in inputs]
        return [torch.cat([chunks[j][r] for j in range(ranks)]) for r in range(ranks)]
    return [inputs[(r - 1) % ranks] for r in range(ranks)]  # send_recv: from the rank before


@pytest.mark.parametrize("collective", comm.COLLECTIVES)
@pytest.mark.parametrize("ranks", [2, 3])
def test_the_reference_matches_the_collective_done_by_hand_and_catches_a_wrong_value(
    collective, ranks
):
    count, dtype = 6 * 5000, "bf16"  # over CHECKED elements, so positions are sampled
    seed = int(torch.randint(0, 10**6, ()).item())
    for rank, expected in enumerate(_simulated_outputs(collective, ranks, count, seed, dtype)):
        out = expected.to(collectives.TORCH_DTYPES[dtype])
        buffers = collectives.Buffers(out.clone(), out.clone())
        err, tol = collectives.check(collective, buffers, ranks, count, rank, seed, dtype)
        assert err == 0 and tol > 0
        # One wrong element at a checked position (each chunk's last is always checked).
        buffers.recv[-1] += 1
        err, tol = collectives.check(collective, buffers, ranks, count, rank, seed, dtype)
        assert err == 1 and err > tol


def test_inputs_are_whole_numbers_from_minus_4_to_4_and_fresh_per_seed():
    a = collectives.draw_input("all_reduce", 2, 10000, 0, 1, "bf16", "cpu")
    b = collectives.draw_input("all_reduce", 2, 10000, 0, 2, "bf16", "cpu")
    assert a.min() == -4 and a.max() == 4 and torch.equal(a, a.round())
    assert not torch.equal(a, b)
    assert collectives.draw_input("all_gather", 4, 8, 0, 1, "fp32", "cpu").numel() == 2


def test_calls_per_sample_fill_about_a_millisecond():
    assert timing.iters_for(1e-6) == 1000 and timing.iters_for(1e-4) == 10
    assert timing.iters_for(5e-3) == 1


IDENTITY = {"gpu": "NVIDIA H200", "torch": "2.x", "sweep": "quick", "timestamp": "t"}


def test_a_record_carries_algbw_busbw_share_and_error_by_hand():
    link = comm.Link(alpha_s=1e-6, bandwidth_bytes_per_s=400e9)
    case = cases.CommCase("all_reduce", 2**30, "bf16", 8)
    record = records.comm_record(case, "nccl", IDENTITY, None, link)
    predicted = 14 * 1e-6 + 1.75 * 2**30 / 400e9
    assert record.predicted_s == pytest.approx(predicted) == record.predicted_datasheet_s
    assert record.gpus == 8 and record.bytes == 2**30 and record.bound == "link"
    assert record.flops == 7 / 8 * 2**29 and "ring all_reduce over 8 ranks: 14 steps" in record.plan
    stats = TimingStats.from_times([5.5e-3] * 5, "events", "converged", 1)
    busy = TelemetrySummary(samples=3, median_sm_clock_mhz=1980, min_sm_clock_mhz=1900)
    hot = dataclasses.replace(busy, median_sm_clock_mhz=1400, throttled=True, throttle_reason="x")
    done = records.fill_measurement(record, case, stats, [busy, hot, None], link)
    assert done.achieved_gbps == pytest.approx(2**30 / 5.5e-3 / 1e9)  # algbw
    assert records.busbw_bytes_per_s(done) == pytest.approx(1.75 * 2**30 / 5.5e-3)
    assert done.roof_fraction == pytest.approx(1.75 * 2**30 / 5.5e-3 / 400e9)
    assert done.error == pytest.approx(5.5e-3 / predicted - 1)
    assert done.sm_clock_mhz == 1690 and done.throttled and "GPU 1" in done.reason


def test_without_a_link_nothing_is_predicted_and_one_rank_has_no_bus():
    case = cases.CommCase("all_gather", 4096, "fp32", 1)
    record = records.comm_record(case, "gloo", IDENTITY, None, None)
    assert record.predicted_s is None and record.plan == ""
    stats = TimingStats.from_times([1e-5] * 3, "host", "converged", 1)
    done = records.fill_measurement(record, case, stats, [], None)
    assert done.error is None and done.roof_fraction is None and done.achieved_gbps > 0


def test_the_large_probe_is_256_mib_or_the_largest_size():
    assert records.probe_size(8 * 2**30) == 2**28
    assert records.probe_size(2**20) == 2**20 and records.probe_size(8) == 4096
