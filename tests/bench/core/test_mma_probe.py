"""bench/core/mma_probe.py without a GPU: its kernel lowers to mma.sync for sm_90 (and the same
loop on a warpgroup to wgmma, so the check can fail), it computes what it claims, and its
FLOPs are the same for every configuration."""

import json
from pathlib import Path

import pytest
import torch

from roofbench.bench.core import mma_probe

SCRIPT = Path(__file__).with_name("lower_mma_probe.py")


@pytest.fixture(scope="module")
def lowered(compile_script):
    """Each configuration's lowering, from a process without the interpreter (and its own
    Triton cache)."""
    done = compile_script(SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    return {row["label"]: row for row in map(json.loads, done.stdout.splitlines())}


@pytest.mark.parametrize("config", mma_probe.SYNC_CONFIGS, ids=mma_probe.label)
def test_the_probe_kernel_lowers_to_mma_v2_and_mma_sync_on_sm90(lowered, config):
    row = lowered[mma_probe.label(config)]
    assert row["versions"] == [2] and row["ptx"] == "sync", row


def test_the_same_loop_on_a_warpgroup_lowers_to_wgmma(lowered):
    row = lowered[mma_probe.label(mma_probe.WGMMA_CONFIG)]
    assert row["versions"] == [3] and row["ptx"] == "wgmma", row


def test_no_configuration_holds_a_warpgroup_but_the_contrast():
    assert all(warps % 4 for *_, warps in mma_probe.SYNC_CONFIGS)
    assert mma_probe.WGMMA_CONFIG[3] % 4 == 0


@pytest.mark.parametrize("config", [*mma_probe.SYNC_CONFIGS, mma_probe.WGMMA_CONFIG])
def test_every_configuration_does_the_same_work_per_program(config):
    assert mma_probe.flops(config, 3) == 3 * mma_probe.PROGRAM_FLOPS
    bm, bn, bk, _ = config
    assert mma_probe.iters(config) * 2 * bm * bn * bk == mma_probe.PROGRAM_FLOPS


def test_the_loop_accumulates_iters_products_and_stores_their_sum():
    # The interpreter runs the kernel's body: each program sums ITERS x (A @ B). (In fp16: the
    # interpreter's numpy has no bf16.)
    config = mma_probe.SYNC_CONFIGS[1]
    bm, bn, bk, _ = config
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(bm * bk, generator=gen).to(torch.float16)
    b = torch.randn(bk * bn, generator=gen).to(torch.float16)
    out = torch.full((3,), -1.0)
    mma_probe.launch(config, a, b, out)
    product = a.float().view(bm, bk) @ b.float().view(bk, bn)
    expected = mma_probe.iters(config) * product.sum()
    torch.testing.assert_close(out, expected.expand(3), rtol=1e-3, atol=1e-1)


def test_the_texts_name_the_matrix_instructions():
    mma = "#mma = #ttg.nvidia_mma<{versionMajor = 2, versionMinor = 0, warpsPerCTA = [1, 2]}>"
    assert mma_probe.ttgir_mma_versions(mma) == {2}
    assert mma_probe.ttgir_mma_versions("#blocked = #ttg.blocked<{}>") == set()
    sync = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f1};"
    wgmma = "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%f1}, %rd1, %rd2;"
    assert mma_probe.ptx_mma(sync) == "sync"
    assert mma_probe.ptx_mma(wgmma + sync) == "wgmma"
    assert mma_probe.ptx_mma("ld.global.b32 %r1, [%rd1];") == ""
