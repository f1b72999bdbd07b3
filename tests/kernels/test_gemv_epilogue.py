"""The GEMV's epilogue (RMSNorm folded in, bias, SiLU x up, residual add) against float64, on
nn.Linear's layout and on packed weights (`kernels.gemv_pack`).

Every combination on odd shapes, both paths (one token row; padded tokens on tl.dot), with and
without split-K (whose second pass runs the epilogue), the residual stream updated in place;
outputs poisoned with NaN first so that an element the kernel skips cannot pass.
"""

import itertools

import pytest
import torch

from roofbench.kernels.gemv import gemv, gemv_epilogue_reference, geometry, launch_plan
from roofbench.kernels.gemv_pack import ROW_ALIGN, pack, row_order, unpack
from roofbench.theory import ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
EPS = 1e-5


def _inputs(m, n, k, dtype, norm, bias, glu, residual, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(dtype).to(device)

    x = rand(m, k, shift=0.3)  # a mean away from 0, as a residual stream's rows have
    w = rand(n, k, scale=k**-0.5)
    n_out = n // 2 if glu else n
    return {
        "x": x,
        "w": w,
        "norm": rand(k, scale=0.2, shift=1.0) if norm else None,
        "bias": rand(n, scale=0.5) if bias else None,
        "glu": bool(glu),
        "residual": rand(m, n_out) if residual else None,
    }


def _error(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(y).any(), "an output element was never written"
    return ((y.double().cpu() - ref.cpu()).abs().max() / ref.abs().max()).item()


def _fp32_tolerance(m: int) -> float:
    """fp32's: on a GPU tl.dot (2..16 rows) takes fp32 inputs at TF32 precision, the product
    and the norm's sums of squares alike; one row, and the interpreter, compute in fp32."""
    return 2e-3 if DEVICE == "cuda" and m > 1 else 1e-5


FLAGS = list(itertools.product([False, True], repeat=4))  # norm, bias, glu, residual


@pytest.mark.parametrize("norm, bias, glu, residual", FLAGS)
@pytest.mark.parametrize(
    "m, n, k, split_k",
    [
        (1, 46, 200, None),  # K not a multiple of BLOCK_K; 23 gate|up pairs
        (1, 64, 256, 2),  # split-K: the second pass finishes the epilogue
        (3, 38, 96, None),  # padded tokens on tl.dot
        (5, 40, 130, 3),
    ],
)
def test_epilogue_matches_float64(m, n, k, split_k, norm, bias, glu, residual):
    args = _inputs(m, n, k, torch.float16, norm, bias, glu, residual, DEVICE, seed=m * n + k)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    out = torch.full(ref.shape, float("nan"), dtype=torch.float16, device=DEVICE)
    config = {"SPLIT_K": split_k} if split_k else None
    y = gemv(args.pop("x"), args.pop("w"), out, config, eps=EPS, **args)
    assert y is out
    assert _error(y, ref) < 2e-3


@pytest.mark.parametrize(
    "m, n, k, split_k", [(1, 46, 200, None), (1, 64, 256, 2), (3, 38, 96, None), (5, 40, 130, 3)]
)
def test_rms_with_the_gain_folded_into_w_is_the_norm(m, n, k, split_k):
    """`rms` scales by 1/rms(x) alone: with W's columns scaled by the gain it is `norm`'s
    product (the gain read and multiply move out of the loop into the weights)."""
    args = _inputs(m, n, k, torch.float32, True, True, True, True, DEVICE, seed=7 * m + n)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    gain = args.pop("norm")
    folded = args.pop("w") * gain[None, :]
    assert _error(gemv_epilogue_reference(args["x"], folded, eps=EPS, rms=True, **{
        key: args[key] for key in ("bias", "glu", "residual")}), ref) < 1e-6  # fmt: skip
    out = torch.full(ref.shape, float("nan"), dtype=torch.float32, device=DEVICE)
    config = {"SPLIT_K": split_k} if split_k else None
    y = gemv(args.pop("x"), folded, out, config, rms=True, eps=EPS, **args)
    assert _error(y, ref) < _fp32_tolerance(m)


@pytest.mark.parametrize("split_k", [None, 2])
@pytest.mark.parametrize("m", [1, 4])
def test_residual_stream_is_updated_in_place(m, split_k):
    """`out` may be the residual itself: each element is read before it is written."""
    args = _inputs(m, 48, 256, torch.float32, True, True, False, True, DEVICE, seed=m)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    stream = args["residual"]
    config = {"SPLIT_K": split_k} if split_k else None
    y = gemv(args.pop("x"), args.pop("w"), stream, config, eps=EPS, **args)
    assert y is stream
    assert _error(stream, ref) < _fp32_tolerance(m)


def test_the_norm_is_the_rows_own():
    """Scaling one input row scales nothing after the norm (1/rms cancels it): a check that the
    sums of squares are per row, not shared by the tokens of a tile."""
    args = _inputs(3, 32, 128, torch.float32, True, False, False, False, DEVICE, seed=7)
    x, w, gain = args["x"], args["w"], args["norm"]
    scaled = x.clone()
    scaled[1] *= 8.0
    y, y_scaled = (gemv(t, w, norm=gain, eps=1e-12) for t in (x, scaled))
    torch.testing.assert_close(y_scaled, y, rtol=1e-5, atol=1e-5)


def test_bad_operands_are_refused():
    x, w = torch.randn(2, 64, device=DEVICE), torch.randn(33, 64, device=DEVICE)
    with pytest.raises(ValueError, match="glu"):
        gemv(x, w, glu=True)  # an odd number of gate|up rows
    with pytest.raises(ValueError, match="gain"):
        gemv(x, w, norm=torch.ones(63, device=DEVICE))
    with pytest.raises(ValueError, match="bias"):
        gemv(x, w, bias=torch.ones(32, device=DEVICE))
    with pytest.raises(ValueError, match="residual"):
        gemv(x, w, residual=torch.ones(2, 32, device=DEVICE))
    with pytest.raises(ValueError, match="not both"):
        gemv(x, w, norm=torch.ones(64, device=DEVICE), rms=True)


def test_the_cost_counts_what_the_epilogue_reads_and_writes():
    plain = ops.gemv(6144, 4096, 1)
    fused = ops.gemv_epilogue(6144, 4096, 1, norm=True, bias=True)
    assert fused.bytes_ - plain.bytes_ == (4096 + 6144) * 2  # the gain and the bias
    glu = ops.gemv_epilogue(28672, 4096, 2, glu=True, residual=True)
    assert glu.bytes_written == 2 * 14336 * 2  # SiLU x up halves the output
    assert glu.bytes_read == (2 * 4096 + 28672 * 4096 + 2 * 14336) * 2


def test_the_plan_of_a_gate_up_product_is_the_plain_gemv_grid():
    """A program's rows are gate|up pairs: as many programs as the plain product of 2I rows."""
    for m, n, k in [(1, 28672, 4096), (4, 9728, 896)]:
        plain, paired = (launch_plan(m, n, k, 2, 132, glu=g) for g in (False, True))
        assert paired.kernels[0].grid == plain.kernels[0].grid


# What the fused decoder runs (QKV, gate|up, O and down, the LM head), and everything at once.
DECODER_FLAGS = [(1, 1, 0, 0), (1, 0, 1, 0), (0, 0, 0, 1), (1, 0, 0, 0), (1, 1, 1, 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("norm, bias, glu, residual", DECODER_FLAGS)
@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("n, k", [(6144, 4096), (28672, 4096), (896, 4864)])  # 896: split-K
def test_epilogue_gpu_bf16(m, n, k, norm, bias, glu, residual):
    args = _inputs(m, n, k, torch.bfloat16, norm, bias, glu, residual, "cuda", seed=m + n)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    out = torch.full(ref.shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    y = gemv(args.pop("x"), args.pop("w"), out, eps=EPS, **args)
    assert _error(y, ref) < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("n, k", [(6144, 4096), (896, 4864)])  # 896: split-K
def test_rms_gpu_bf16(m, n, k):
    args = _inputs(m, n, k, torch.bfloat16, True, True, False, False, "cuda", seed=m * k)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    folded = (args.pop("w").float() * args.pop("norm").float()[None, :]).to(torch.bfloat16)
    out = torch.full(ref.shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    y = gemv(args.pop("x"), folded, out, rms=True, eps=EPS, **args)
    assert _error(y, ref) < 2e-2


# --- packed weights ---


@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize("pack_n, pack_k", [(8, 32), (4, 64), (32, 16)])
def test_pack_round_trips_and_pads_with_zeros(glu, pack_n, pack_k):
    w = torch.randn(46, 100)
    p = pack(w, pack_n, pack_k, glu=glu)
    assert torch.equal(unpack(p), w)
    rows = -(-46 // ROW_ALIGN) * ROW_ALIGN
    assert p.data.shape == (rows // pack_n, -(-100 // pack_k), pack_n, pack_k)
    assert p.data.abs().sum() == pytest.approx(w.abs().sum().item(), rel=1e-6)  # padding is 0
    # the first tile holds the kernel's first rows, in its order
    assert torch.equal(p.data[0, 0, 1], w[row_order(46, glu)[1], :pack_k])


def test_the_glu_order_alternates_gate_and_up():
    assert row_order(6, True).tolist() == [0, 3, 1, 4, 2, 5]
    assert row_order(6, False).tolist() == list(range(6))


def test_bad_packings_are_refused():
    with pytest.raises(ValueError, match="pack_n"):
        pack(torch.randn(8, 8), pack_n=3, pack_k=8)
    with pytest.raises(ValueError, match="even"):
        pack(torch.randn(7, 8), pack_n=8, pack_k=8, glu=True)
    p = pack(torch.randn(8, 16, dtype=torch.float16), 8, 16)
    with pytest.raises(ValueError, match="glu"):
        gemv(torch.randn(1, 16, dtype=torch.float16), p, glu=True)
    with pytest.raises(ValueError, match="expected"):
        gemv(torch.randn(1, 15, dtype=torch.float16), p)


@pytest.mark.parametrize("norm, bias, glu, residual", FLAGS)
@pytest.mark.parametrize(
    "m, n, k, split_k, pack_n, pack_k",
    [
        (1, 46, 200, None, 8, 32),  # K not a multiple of the K step; 23 gate|up pairs
        (1, 64, 256, 2, 16, 64),  # split-K; K steps of 32 (the interpreter's) in tiles of 64
        (3, 38, 96, None, 8, 32),  # padded tokens on tl.dot
        (5, 40, 130, 3, 4, 64),
    ],
)
def test_packed_epilogue_matches_float64(
    m, n, k, split_k, pack_n, pack_k, norm, bias, glu, residual
):
    args = _inputs(m, n, k, torch.float16, norm, bias, glu, residual, DEVICE, seed=m + n * k)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    w = pack(args.pop("w"), pack_n, pack_k, glu=glu)
    out = torch.full(ref.shape, float("nan"), dtype=torch.float16, device=DEVICE)
    config = {"SPLIT_K": split_k} if split_k else None
    y = gemv(args.pop("x"), w, out, config, eps=EPS, **args)
    assert y is out
    assert _error(y, ref) < 2e-3


def test_the_tiles_must_fit_the_packing():
    g = geometry(4, 6144, 4096, 2, 132, {"BLOCK_K": 512}, pack_k=256)
    assert g.block_k == 256  # cut to the packing's K tile
    with pytest.raises(ValueError, match="K step of 96 does not divide"):
        geometry(1, 6144, 4096, 2, 132, {"BLOCK_K": 96}, pack_k=256)
    with pytest.raises(ValueError, match="BLOCK_N 128 does not divide"):
        geometry(4, 6144, 4096, 2, 132, {"BLOCK_N": 128}, pack_k=256)


@pytest.mark.gpu
@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("n, k", [(6144, 4096), (28672, 4096), (896, 4864), (4096, 14336)])
def test_packed_gpu_bf16(m, n, k, glu):
    args = _inputs(m, n, k, torch.bfloat16, True, False, glu, not glu, "cuda", seed=m + k)
    ref = gemv_epilogue_reference(**args, eps=EPS)
    w = pack(args.pop("w"), glu=glu)
    out = torch.full(ref.shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    y = gemv(args.pop("x"), w, out, eps=EPS, **args)
    assert _error(y, ref) < 2e-2
