"""bench/plot.py: PNGs are written for full, partial, empty and predictions-only runs."""

import pytest
from matplotlib.collections import PathCollection

from roofbench.bench.core.records import Record
from roofbench.bench.sweep.plot import (
    plotted,
    prefill_vs_decode_figure,
    prefill_vs_decode_plot,
    roofline_figure,
    roofline_plot,
)
from roofbench.bench.sweep.report import predicted_ridge_m
from roofbench.theory import ops
from roofbench.theory.roofline import Roof

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATASHEET = Roof(989e12, 3.35e12, 4e-6, "datasheet")
MEASURED = Roof(700e12, 3.0e12, 5e-6, "measured")
N, K = 4096, 4096


def rec(case, op, impl, cost, measured_s=None, **fields):
    """A record whose flops/bytes/intensity come from theory, with a predicted time."""
    return Record(
        case=case,
        op=op,
        impl=impl,
        dtype="bf16",
        flops=cost.flops,
        bytes=cost.bytes_,
        intensity=cost.intensity,
        predicted_s=MEASURED.time_s(cost),
        measured_s=measured_s,
        gpu="NVIDIA H200",
        **fields,
    )


def linears(measured=True):
    out = []
    for impl, slowdown in (("triton", 1.2), ("torch", 1.1)):
        for m in (1, 16, 128, 1024, 4096):
            cost = ops.gemm(m, N, K)
            time_s = MEASURED.time_s(cost) * slowdown if measured else None
            out.append(rec(f"lin-m{m}", "gemm", impl, cost, time_s, m=m, n=N, k=K))
    return out


def attention(measured=True):
    out = []
    for impl in ("triton", "torch"):
        for s in (512, 4096, 32768):
            cost = ops.prefill_attention(1, 32, 8, s, 128)
            time_s = MEASURED.time_s(cost) * 1.3 if measured else None
            out.append(
                rec(f"pre-s{s}", "prefill_attention", impl, cost, time_s, batch=1, seq=s,
                    heads=32, kv_heads=8, head_dim=128)
            )  # fmt: skip
            cost = ops.decode_attention(4, 32, 8, s, 128)
            time_s = MEASURED.time_s(cost) * 1.5 if measured else None
            out.append(
                rec(f"dec-s{s}", "decode_attention", impl, cost, time_s, batch=4, seq=s,
                    heads=32, kv_heads=8, head_dim=128)
            )  # fmt: skip
    return out


def full_run():
    copy = rec("copy", "copy", "torch", ops.copy(2**31), 1.5e-3)  # zero intensity: not on log axes
    failed = rec("bad", "gemm", "triton", ops.gemm(8, N, K), status="failed", reason="wrong")
    return linears() + attention() + [copy, failed]


def is_png(path):
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def scatter_count(fig):
    return sum(
        len(c.get_offsets())
        for ax in fig.axes
        for c in ax.collections
        if isinstance(c, PathCollection)
    )


@pytest.mark.parametrize(
    "records",
    [full_run(), [], linears(), attention(), linears(measured=False) + attention(measured=False)],
    ids=["full", "empty", "linears-only", "attention-only", "predictions-only"],
)
def test_both_plots_write_valid_pngs(tmp_path, records):
    roofline = roofline_plot(records, DATASHEET, MEASURED, tmp_path / "out" / "roofline.png")
    asymmetry = prefill_vs_decode_plot(records, MEASURED, tmp_path / "prefill_vs_decode.png")
    assert is_png(roofline) and is_png(asymmetry)


def test_plots_without_roofs_still_write(tmp_path):
    assert is_png(roofline_plot(full_run(), None, None, tmp_path / "r.png"))
    assert is_png(prefill_vs_decode_plot(full_run(), None, tmp_path / "p.png"))


def test_roofline_has_one_point_per_measured_record_with_intensity():
    records = full_run()
    fig = roofline_figure(records, DATASHEET, MEASURED)
    # all kernel records, but not the failed one nor the zero-intensity copy
    assert scatter_count(fig) == len(linears()) + len(attention())
    labels = fig.axes[0].get_legend().get_texts()
    names = [t.get_text() for t in labels]
    assert any(n.startswith("datasheet roof") for n in names)
    assert any(n.startswith("measured roof") for n in names)
    assert {"triton", "torch", "gemm", "prefill_attention", "decode_attention"} <= set(names)
    assert "NVIDIA H200" in fig.axes[0].get_title()


def test_roof_lines_follow_min_of_peak_and_bandwidth():
    fig = roofline_figure([], DATASHEET, MEASURED)
    lines = {line.get_label().split()[0]: line for line in fig.axes[0].get_lines()}
    x, y = lines["measured"].get_data()
    expected = [min(700.0, i * 3.0) for i in x]
    assert list(y) == pytest.approx(expected)
    assert x.min() < MEASURED.ridge < x.max()


def test_predictions_only_runs_plot_predicted_points_and_say_so():
    records = linears(measured=False)
    chosen, predicted = plotted(records)
    assert predicted and len(chosen) == len(records)
    fig = roofline_figure(records, DATASHEET, MEASURED)
    assert scatter_count(fig) == len(records)
    assert "predicted" in fig.axes[0].get_title()
    assert "predicted" in fig.axes[0].get_ylabel()
    names = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "triton (predicted)" in names


def test_measured_points_win_over_predicted_ones():
    records = linears() + attention(measured=False)
    chosen, predicted = plotted(records)
    assert not predicted
    assert {r.op for r in chosen} == {"gemm"}


def test_prefill_vs_decode_panels():
    fig = prefill_vs_decode_figure(full_run(), MEASURED)
    linear_ax, prefill_ax, decode_ax = fig.axes[:3]
    # one line per (shape, impl) series and the roof lines
    linear_labels = [line.get_label() for line in linear_ax.get_lines()]
    assert {"4096x4096 triton", "4096x4096 torch", "compute roof"} <= set(linear_labels)
    ridge_m = predicted_ridge_m(N, K, "bf16", MEASURED)
    vertical = [line for line in linear_ax.get_lines() if list(line.get_xdata()) == [ridge_m] * 2]
    assert vertical, "the predicted ridge M is marked"
    roof_gbps = [line for line in decode_ax.get_lines() if line.get_label() == "bandwidth roof"]
    assert list(roof_gbps[0].get_ydata()) == [3000.0, 3000.0]
    decode_lines = [line for line in decode_ax.get_lines() if "triton" in line.get_label()]
    assert list(decode_lines[0].get_xdata()) == [512, 4096, 32768]
    assert prefill_ax.get_lines()
    assert "predicted" not in fig.texts[0].get_text()


def test_prefill_vs_decode_says_which_panels_are_empty():
    fig = prefill_vs_decode_figure(attention(), MEASURED)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["no GEMM/GEMV records"]
    assert not fig.axes[1].texts and not fig.axes[2].texts
