"""theory/comm: bus factors as nccl-tests defines them, the alpha-beta times of ring and tree,
the calibration from two probes, and the link bandwidths of theory/hardware."""

import dataclasses

import pytest

from roofbench.theory import comm
from roofbench.theory.hardware import GPUS, get_gpu, spec_from_nvml

GIB = 2**30


@pytest.mark.parametrize(
    "collective,ranks,factor",
    [
        # nccl-tests PERFORMANCE.md: allreduce 2(n-1)/n, allgather/reducescatter/alltoall (n-1)/n,
        # sendrecv 1.
        ("all_reduce", 2, 1.0),
        ("all_reduce", 4, 1.5),
        ("all_reduce", 8, 1.75),
        ("all_gather", 8, 0.875),
        ("reduce_scatter", 4, 0.75),
        ("all_to_all", 2, 0.5),
        ("send_recv", 8, 1.0),
    ],
)
def test_bus_factors_are_nccl_tests_definitions(collective, ranks, factor):
    assert comm.bus_factor(collective, ranks) == pytest.approx(factor)


def test_algbw_and_busbw_of_a_worked_all_reduce():
    # 1 GiB over 8 ranks in 5.5 ms: algbw = 2^30 / 5.5e-3 = 195.2 GB/s, busbw = 1.75x = 341.6.
    algbw = comm.algbw_bytes_per_s(GIB, 5.5e-3)
    assert algbw == pytest.approx(195.2258e9, rel=1e-5)
    assert comm.busbw_bytes_per_s("all_reduce", 8, GIB, 5.5e-3) == pytest.approx(341.6452e9, 1e-5)


def test_ring_all_reduce_on_h200_nvlink_by_hand():
    link = comm.Link.from_spec(get_gpu("h200"))
    assert link.bandwidth_bytes_per_s == 450e9 and link.alpha_s == 0.6e-6
    p = comm.predict_with("all_reduce", 8, GIB, link, "ring")
    # 2(n-1) = 14 steps of 0.6 us; 1.75 * 2^30 B at 450 GB/s = 4.17566 ms.
    assert p.steps == 14 and p.latency_s == pytest.approx(8.4e-6)
    assert p.wire_bytes == pytest.approx(1879048192)
    assert p.time_s == pytest.approx(8.4e-6 + 1879048192 / 450e9)
    assert p.bound == "link"
    # On a ring the bus bandwidth of the predicted time tends to the link's as S grows.
    assert p.busbw_bytes_per_s == pytest.approx(450e9, rel=0.01)
    assert p.busbw_bytes_per_s < 450e9


def test_tree_has_fewer_steps_and_wins_only_small_messages():
    link = comm.Link(alpha_s=1e-6, bandwidth_bytes_per_s=100e9)
    tree = comm.predict_with("all_reduce", 8, 8, link, "tree")
    assert tree.steps == 6 and tree.wire_bytes == 16  # 2 ceil(log2 8); 2 S
    assert comm.predict("all_reduce", 8, 8, link).algorithm == "tree"
    assert comm.predict("all_reduce", 8, GIB, link).algorithm == "ring"
    # Not a power of two: ceil(log2 6) = 3 levels.
    assert comm.steps("all_reduce", 6, "tree") == 6
    with pytest.raises(ValueError, match="rings only"):
        comm.predict_with("all_gather", 8, 1024, link, "tree")


@pytest.mark.parametrize(
    "collective,steps", [("all_gather", 3), ("reduce_scatter", 3), ("all_to_all", 3)]
)
def test_the_other_rings_take_n_minus_1_steps_of_s_over_n(collective, steps):
    link = comm.Link(alpha_s=2e-6, bandwidth_bytes_per_s=50e9)
    p = comm.predict(collective, 4, 4096, link)
    assert p.steps == steps
    assert p.time_s == pytest.approx(3 * 2e-6 + 0.75 * 4096 / 50e9)


def test_send_recv_is_one_step_of_the_whole_message():
    p = comm.predict("send_recv", 2, 1e6, comm.Link(3e-6, 1e9))
    assert p.steps == 1 and p.time_s == pytest.approx(3e-6 + 1e-3)


def test_one_rank_sends_nothing():
    p = comm.predict("all_reduce", 1, GIB, comm.Link(1e-6, 1e9))
    assert p.time_s == 0 and p.steps == 0 and p.busbw_bytes_per_s == 0


def test_reduce_flops_count_the_additions_of_reducing_collectives_only():
    assert comm.reduce_flops("all_reduce", 4, 4096, "bf16") == 1536  # 3/4 of 2048 elements
    assert comm.reduce_flops("reduce_scatter", 2, 4096, "fp32") == 512
    assert comm.reduce_flops("all_gather", 4, 4096, "bf16") == 0


def test_calibration_recovers_alpha_and_bandwidth_from_two_probes():
    alpha, bw = 2.5e-6, 123e9
    small = comm.Probe(1, 8, alpha + 8 / bw)
    large = comm.Probe(1, 2**28, alpha + 2**28 / bw)
    link = comm.calibrate_link(small, large)
    assert link.alpha_s == pytest.approx(alpha, rel=1e-9)
    assert link.bandwidth_bytes_per_s == pytest.approx(bw, rel=1e-9)
    # Probes of different step counts determine them too.
    link = comm.calibrate_link(comm.Probe(14, 8, 14 * alpha + 8 / bw), large)
    assert link.alpha_s == pytest.approx(alpha, rel=1e-9)


def test_calibration_clamps_a_negative_alpha():
    # The small probe timed faster than the large one's bytes alone allow: alpha would be < 0.
    link = comm.calibrate_link(comm.Probe(1, 2**20, 1e-6), comm.Probe(1, 2**21, 1e-3))
    assert link.alpha_s == 0.0
    assert link.bandwidth_bytes_per_s == pytest.approx(2**21 / 1e-3)
    with pytest.raises(ValueError, match="do not determine"):
        comm.calibrate_link(comm.Probe(1, 8, 1e-6), comm.Probe(1, 8, 1e-6))


def test_message_sizes_split_into_elements_and_chunks():
    assert comm.chunk_elements("all_reduce", 3, 8, "bf16") == 4
    assert comm.chunk_elements("all_gather", 4, 8, "bf16") == 4
    with pytest.raises(ValueError, match="does not split over 3"):
        comm.chunk_elements("all_gather", 3, 8, "bf16")
    with pytest.raises(ValueError, match="whole number of fp32"):
        comm.chunk_elements("all_reduce", 2, 6, "fp32")
    with pytest.raises(ValueError, match="unknown collective"):
        comm.bus_factor("broadcast_all", 2)


def test_every_table_gpu_has_a_sourced_one_way_link_bandwidth():
    for spec in GPUS.values():
        assert spec.link_gbps > 0 and spec.link and spec.link_source, spec.slug
        # Datasheets quote both directions: the figure in the source is twice the one-way one.
        both_ways = spec.link_gbps * 2
        quoted = f"{both_ways:.0f} GB/s" if both_ways < 1000 else f"{both_ways / 1000:.1f} TB/s"
        assert quoted in spec.link_source, (spec.slug, spec.link_source)
    assert GPUS["h100-sxm"].link_gbps == GPUS["h200"].link_gbps == 18 * 25  # NVLink 4
    assert GPUS["h100-pcie"].link_gbps < GPUS["h100-sxm"].link_gbps / 5  # PCIe Gen5 vs NVLink


def test_a_spec_from_nvml_has_no_link_and_says_so():
    spec = spec_from_nvml("NVIDIA X", 5120, 2619, 132, 1980, 50 * 2**20, (9, 0))
    assert spec.link_gbps == 0
    with pytest.raises(ValueError, match="no link bandwidth"):
        comm.Link.from_spec(spec)
    pcie = dataclasses.replace(spec, link="PCIe Gen4 x16", link_gbps=32.0)
    assert comm.Link.from_spec(pcie).alpha_s == comm.NOMINAL_ALPHA_S["PCIe"]
