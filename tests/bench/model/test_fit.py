"""The fit rule of model runs: an estimate plus a stated margin against the memory actually free,
as a pure function of (free bytes, needed bytes), and the skips it decides."""

import types

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from roofbench.bench.core.records import Record
from roofbench.bench.model import measure as mm
from roofbench.bench.model import points as pts
from roofbench.theory import ops
from roofbench.theory.llm import MODELS

SIZES = st.floats(min_value=0, max_value=1e12, allow_nan=False)


@given(free=SIZES, need=SIZES, more=SIZES)
def test_more_free_memory_never_unfits_and_more_need_never_fits(free, need, more):
    if pts.fits(free, need):
        assert pts.fits(free + more, need)
    if not pts.fits(free, need):
        assert not pts.fits(free, need + more)


@given(need=SIZES)
def test_the_boundary_is_the_need_plus_its_margin(need):
    margin = pts.fit_margin_bytes(need)
    assert margin >= pts.FIT_MARGIN_BYTES and margin >= pts.FIT_ESTIMATE_SLACK * need
    assert pts.fits(need + margin, need)
    assert not pts.fits((need + margin) * (1 - 1e-9) - 1, need)


def test_a_large_cache_fits_where_a_fixed_fraction_refused_it():
    """Decode at batch 256, context 65536 (Llama 3 8B heads): its K and V take 68.7 GB, which a
    rule of 0.45 x 148 GB free (66.6 GB) refused; the margin is a few GB, not half the GPU."""
    need = ops.decode_attention(256, 32, 8, 65536, 128).bytes_
    assert need == pytest.approx(68.7e9, rel=0.01)
    assert need > 0.45 * 148e9 and pts.fits(148e9, need)
    assert not pts.fits(need, need)  # nothing is sized to the last byte


def test_a_point_over_the_rule_is_skipped_with_the_margin_said(monkeypatch):
    config = MODELS["llama3-8b"].with_layers(1)
    point = pts.Point("base", "tbt", 64, 32768)
    need = pts.need_bytes(config, point)
    free = need + pts.fit_margin_bytes(need) - 1e6  # the estimate fits; its margin does not
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    ctx = types.SimpleNamespace(device="cuda")
    record = Record(case="x", op="tbt", impl="torch", dtype="bf16")
    out = mm.measure_point(types.SimpleNamespace(config=config), point, record, ctx)
    assert out.status == "skipped" and "margin" in out.reason and "GB free" in out.reason


def test_depth_is_the_most_layers_under_half_the_memory_free_less_the_margin():
    big = MODELS["llama3-70b"]
    free = 100e9
    layers = pts.fitting_layers(big, free - pts.FIT_MARGIN_BYTES)
    budget = pts.WEIGHT_FRACTION * (free - pts.FIT_MARGIN_BYTES)
    assert big.with_layers(layers).weights_bytes() <= budget
    assert big.with_layers(layers + 1).weights_bytes() > budget
