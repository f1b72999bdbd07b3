"""The fit rule of kernel cases and model runs (bench/core/memory.py), as arithmetic."""

import pytest

from roofbench.bench.core import memory
from roofbench.kernels.catalog import make_case


def test_the_decode_case_a_fixed_fraction_skipped_now_fits():
    # Decode attention at B=256, context 65536 (Llama 3 8B heads): 68.7 GB of KV cache, which
    # the old rule (45% of free memory) skipped with 148 GB free.
    case = make_case("decode_attention", batch=256, seq=65536, heads=32, kv_heads=8, head_dim=128)
    need = case.cost().bytes_
    assert need == pytest.approx(68.7e9, rel=0.01)
    assert memory.fits(148e9, need)
    assert not memory.fits(need + memory.fit_margin_bytes(need) - 1.0, need)


def test_the_margin_and_the_reason():
    need = 10e9
    margin = memory.fit_margin_bytes(need)
    assert margin == memory.FIT_MARGIN_BYTES + memory.FIT_ESTIMATE_SLACK * need
    assert memory.fits(need + margin, need)
    why = memory.fit_reason("inputs and outputs", 5e9, need)
    assert why == f"needs ~10.0 GB (inputs and outputs) + {margin / 1e9:.1f} GB margin, 5.0 GB free"
