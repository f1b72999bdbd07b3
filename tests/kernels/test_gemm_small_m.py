"""The small-M GEMM candidates on `gemm_streamk`'s kernel as Triton compiles them for sm_90
(`compiled_gemm_small_m.py`, in a process of its own): each fits a Hopper block's shared
memory, spills nothing, and with A and W swapped runs the wgmma with the weight rows on its
64-row side and the token tile on its N side, as the docstring of `gemm_configs._small_m` says."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compiled_gemm_small_m.py")
# The shared memory one block may use on an H100 or H200 (227 KiB).
HOPPER_SHARED_BYTES = 232448


@pytest.fixture(scope="module")
def compiled(compiled_json):
    return compiled_json(SCRIPT, timeout=600)


def test_every_small_m_candidate_fits_a_hopper_block(compiled):
    assert len(compiled) >= 6
    assert {x["cfg"]["SWAP_AB"] for x in compiled} == {True, False}
    assert any(x["split"] > 1 for x in compiled)  # an in-kernel split-K among them
    for x in compiled:
        assert x["shared"] <= HOPPER_SHARED_BYTES and not x["local_stores"], x


def test_swapped_candidates_put_the_weight_rows_on_the_mma_rows(compiled):
    for x in compiled:
        cfg = x["cfg"]
        # a wgmma covers 64 rows of the accumulator and all its columns: the weight tile's rows
        # and the token tile as N with A and W swapped, the token rows otherwise
        cols = cfg["BLOCK_M"] if cfg["SWAP_AB"] else cfg["BLOCK_N"]
        assert [(m, n) for m, n, _ in x["wgmma"]] == [(64, cols)], x
    assert {x["cfg"]["BLOCK_M"] for x in compiled if x["cfg"]["SWAP_AB"]} == {16, 32, 64}
