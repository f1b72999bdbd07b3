"""kernels/llama_plan: the declared kernels of a step against what the decoder really calls.

On the CPU a `TorchFunctionMode` sees every torch function the decoder's code calls and each
call of an op implementation; the declaration must name the same calls, as many times, with
the same op shapes. A call that launches no kernel (a view, a shape) is known by name, so a new
kernel in the decoder fails here rather than pass unseen. On the GPU, a profiler's kernel list
is held against the declared launches.
"""

import collections
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from roofbench.kernels import catalog, fused_step
from roofbench.kernels.decode_attention import decode_attention_reference
from roofbench.kernels.llama import Llama
from roofbench.kernels.llama_plan import decoder_plan, step_kernels, step_plans
from roofbench.theory.hardware import get_gpu
from roofbench.theory.llm import MODELS, ModelConfig
from roofbench.theory.roofline import Roof
from roofbench.theory.step import KINDS, predict_step
from roofbench.theory.tiers import Calibration

CALIBRATION = Path(__file__).resolve().parents[2] / "results" / "h200" / "calibration.json"
# Kernels both backends launch alike: the ops and their bias adds.
SHARED = {"projection", "attention", "lm_head", "bias"}

# Torch calls of the decoder that launch no kernel: views, metadata, grad mode.
NO_KERNEL = {
    "__get__",
    "__getitem__",
    "view",
    "transpose",
    "split",
    "chunk",
    "unsqueeze",
    "expand",
    "_set_grad_enabled",
    "size",
    "dim",
}
# Calls that copy only when their input's strides require it: a kernel when the result has
# storage of its own.
MAYBE_COPY = {"reshape", "contiguous"}


def tiny(**changes) -> ModelConfig:
    config = ModelConfig(
        name="tiny",
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=96,
        vocab_size=97,
    )
    return dataclasses.replace(config, **changes)


def _shares_storage(result, args) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not isinstance(result, torch.Tensor) or not tensors:
        return False
    return result.untyped_storage().data_ptr() == tensors[0].untyped_storage().data_ptr()


class Counter(TorchFunctionMode):
    """Counts the torch calls the decoder makes and the op calls with their shapes; nothing
    inside an op's implementation is counted (its plan declares those)."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()
        self.ops: collections.Counter = collections.Counter()
        self.unknown: list[str] = []
        self.inside = 0
        self.on = False

    def __enter__(self):
        self.on = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.on = False
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if self.inside:
            return result
        name = getattr(func, "__name__", str(func))
        if name in NO_KERNEL:
            return result
        if name in MAYBE_COPY:
            if not _shares_storage(result, args):
                self.calls[name] += 1
        else:
            self.calls[name] += 1
        return result

    def wrap(self, model: Llama) -> None:
        for op, fn in list(model._fn.items()):
            model._fn[op] = self._counted(op, fn)
        for name, fn in list(model._fused.items()):  # the fused backend's kernels, by name
            model._fused[name] = self._counted_kernel(name, fn)

    def _counted_kernel(self, name, fn):
        def call(*args, **kwargs):
            if self.on:
                self.calls[name] += 1
            self.inside += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside -= 1

        return call

    def _counted(self, op, fn):
        def call(*args, **kwargs):
            if self.on:
                self.ops[(op, *_op_shape(op, args))] += 1
            self.inside += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside -= 1

        return call


def _op_shape(op, args) -> tuple:
    if op in ("gemm", "gemv"):
        x, w = args[:2]
        return (x.shape[0], w.shape[0], x.shape[1])
    q, k = args[:2]
    if op == "prefill_attention":  # q [B, Hq, N, D]
        return (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
    return (q.shape[0], q.shape[1], k.shape[2], q.shape[2])  # decode: q [B, Hq, D], k [..., S, D]


def _declared(kernels):
    """(torch calls of the decoder's own code, op calls with shapes) the declaration names."""
    calls, op_calls = collections.Counter(), collections.Counter()
    for k in kernels:
        if k.origin != "decoder":
            continue
        w = k.work
        if k.call in catalog.op_names():
            if w.kind == "matmul":
                shape = (w.m, w.n, w.k)
            elif k.call == "prefill_attention":
                shape = (w.batch, w.heads, w.q_len, w.head_dim)
            else:
                shape = (w.batch, w.heads, w.kv_len, w.head_dim)
            op_calls[(k.call, *shape)] += k.count
        else:
            calls[k.call] += k.count
    return calls, op_calls


def _run(model: Llama, phase: str, batch: int, seq: int) -> Counter:
    """The calls of the second of two steps (a model run times warm steps: the rotary tables
    of a naive step are built once, by the first)."""
    gen = torch.Generator().manual_seed(seq * 7 + batch)
    vocab = model.config.vocab_size
    counter = Counter()
    counter.wrap(model)
    if phase == "decode":
        model.allocate_cache(batch, seq + 1).fill_random_(seed=seq)
        toks = torch.randint(0, vocab, (batch, 1), generator=gen)
        lens = torch.full((batch,), seq, dtype=torch.int32)
        model.decode_step(toks, lens)
        with counter:
            model.decode_step(toks, lens)
    else:
        toks = torch.randint(0, vocab, (batch, seq), generator=gen)
        if phase == "prefill":
            model.allocate_cache(batch, seq)
        step = model.prefill if phase == "prefill" else model.naive_step
        step(toks)
        with counter:
            step(toks)
    return counter


FUSED_BACKENDS = ("fused", "fused-folded")
SHAPES = [("decode", 2, 9), ("decode", 1, 20), ("prefill", 2, 9), ("prefill", 3, 7)]
SHAPES += [("naive", 1, 11), ("decode", 17, 5)]  # 17 rows: the decode step on the GEMM


@pytest.mark.parametrize("backend", ["torch", "triton", "fused", "fused-folded"])
@pytest.mark.parametrize("phase,batch,seq", SHAPES)
def test_declared_kernels_are_what_the_decoder_calls(backend, phase, batch, seq):
    config = tiny()
    model = Llama.random(config, backend, seed=seq)
    counter = _run(model, phase, batch, seq)
    calls, op_calls = _declared(step_kernels(config, backend, phase, batch, seq))
    assert counter.calls == calls
    assert counter.ops == op_calls


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_biases_are_declared_as_the_decoder_adds_them(phase):
    config = tiny(attention_bias=True, mlp_bias=True)
    model = Llama.random(config, "torch", seed=3)
    counter = _run(model, phase, 2, 6)
    calls, op_calls = _declared(step_kernels(config, "torch", phase, 2, 6))
    assert calls["add_"] == 4 * config.num_layers  # q|k|v, o, gate|up, down
    assert counter.calls == calls and counter.ops == op_calls


def test_more_layers_declare_more_kernels_and_the_same_step_kernels():
    two, five = tiny(num_layers=2), tiny(num_layers=5)
    short = step_kernels(two, "triton", "decode", 1, 64)
    deep = step_kernels(five, "triton", "decode", 1, 64)
    assert [k.name for k in short] == [k.name for k in deep]
    per_layer = [(a.count, b.count) for a, b in zip(short, deep, strict=True) if a.count != b.count]
    assert per_layer and all(b * 2 == a * 5 for a, b in per_layer)
    assert sum(k.count * k.launches for k in deep) > sum(k.count * k.launches for k in short)


def test_the_torch_decode_attention_builds_its_mask_as_declared():
    """Inside the torch decode attention (device lengths): the mask calls its plan's kernels
    declare as its own code, then SDPA (whose mask conversion is observed, not called)."""
    batch, heads, kv_heads, s_max, d = 3, 4, 2, 10, 16
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, d, generator=gen)
    k, v = (torch.randn(batch, kv_heads, s_max, d, generator=gen) for _ in range(2))
    lens = torch.tensor([4, 10, 7], dtype=torch.int32)

    class Calls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = collections.Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            if name not in NO_KERNEL | MAYBE_COPY:
                self.names[name] += 1
            return result

    with Calls() as seen:
        decode_attention_reference(q, k, v, lens)
    config = tiny(num_heads=heads, num_kv_heads=kv_heads, hidden_size=heads * d, num_layers=1)
    own = [
        kernel.call
        for kernel in step_kernels(config, "torch", "decode", batch, s_max - 1)
        if kernel.origin == "decode_attention" and kernel.source == "declared"
    ]
    assert seen.names == collections.Counter(own + ["scaled_dot_product_attention"])


def test_a_reference_called_without_out_makes_no_copy():
    impl = catalog.get_impl("gemv", "torch")
    case = catalog.make_case("gemv", m=1, n=256, k=128, dtype="bf16")
    assert impl.launch_plan(case).launches == 2  # the vendor's kernel and the copy into out
    plan = decoder_plan(impl, case)
    assert plan.launches == 1 and plan.partial_bytes == 0
    ours = catalog.get_impl("gemv", "triton")
    assert decoder_plan(ours, case) == ours.launch_plan(case)


def test_a_bad_phase_or_size_is_refused():
    with pytest.raises(ValueError, match="phase"):
        step_kernels(tiny(), "torch", "train", 1, 8)
    with pytest.raises(ValueError, match="positive"):
        step_kernels(tiny(), "torch", "decode", 0, 8)


# --- on the GPU: the profiler's kernel list --------------------------------------------------


def _profiled_kernels(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    cuda = torch.autograd.DeviceType.CUDA
    return [
        e.name
        for e in prof.events()
        if e.device_type == cuda and not e.name.startswith(("Memcpy", "Memset"))
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch", "fused", "fused-folded"])
@pytest.mark.parametrize(
    "phase,batch,seq",
    [
        ("decode", 1, 512),
        ("decode", 16, 2048),
        ("prefill", 1, 128),
        ("prefill", 2, 1024),
        ("naive", 2, 256),
    ],
)
def test_the_gpu_launches_the_declared_kernels(backend, phase, batch, seq):
    """Our kernels and torch's element-wise ones are declared exactly; a vendor library's call
    is declared as one kernel and may launch one more (cuBLAS's split-K reduce)."""
    config = MODELS["llama3-8b"].with_layers(2)
    model = Llama.random(config, backend, "cuda", torch.bfloat16)
    vocab = config.vocab_size
    if phase == "decode":
        model.allocate_cache(batch, seq + 1).fill_random_()
        toks = torch.randint(0, vocab, (batch, 1), device="cuda")
        lens = torch.full((batch,), seq, dtype=torch.int32, device="cuda")
        names = _profiled_kernels(lambda: model.decode_step(toks, lens))
    else:
        toks = torch.randint(0, vocab, (batch, seq), device="cuda")
        if phase == "prefill":
            model.allocate_cache(batch, seq)
        step = model.prefill if phase == "prefill" else model.naive_step
        names = _profiled_kernels(lambda: step(toks))
    kernels = step_kernels(config, backend, phase, batch, seq)
    declared = sum(k.count * k.launches for k in kernels)
    ops = catalog.op_names()
    vendor_calls = sum(k.count for k in kernels if k.call in ops) if backend == "torch" else 0
    extra = len(names) - declared
    assert 0 <= extra <= vendor_calls, (declared, vendor_calls, names)
    if backend != "torch":
        assert extra == 0, names


@pytest.mark.parametrize(
    "phase,batch,seq", [("decode", 1, 512), ("prefill", 2, 64), ("naive", 1, 9)]
)
def test_the_fused_backend_launches_fewer_kernels_and_is_predicted_faster(phase, batch, seq):
    """The same projection and attention launches as on "triton"; besides them, where the
    projections are GEMVs, 1 kernel per layer at one token row (rotary + append: the norms,
    SiLU x up and residual adds run in the projections' epilogues), 3 at 9 rows (the norms
    are kernels of their own there), on the
    GEMM 4 (two norms, rotary + append, SiLU x up), against 13 (11 in a naive step); less
    element-wise traffic, and a shorter step predicted on the H200's calibration."""
    config = MODELS["llama3-8b"].with_layers(4)
    layers = config.num_layers
    ours, fused = (step_kernels(config, b, phase, batch, seq) for b in ("triton", "fused"))

    def launches(kernels, kinds) -> int:
        return sum(k.count * k.launches for k in kernels if k.kind in kinds)

    assert launches(fused, SHARED) == launches(ours, SHARED)
    light = set(KINDS) - SHARED - {"layout"}
    on_gemv = phase != "prefill"  # 1 and 9 token rows; the prefill's 128 run on the GEMM
    lengths = phase == "decode"  # a decode step's lengths
    rows = batch if phase == "decode" else batch * seq
    if on_gemv and rows == 1:  # the embedding; the final norm is in the LM head's epilogue
        assert launches(fused, light) == layers + 1 + lengths
    elif on_gemv:  # and the two norms of each layer as kernels (the final one at batch > 1)
        assert launches(fused, light) == 3 * layers + 1 + (batch > 1) + lengths
    else:  # the embedding and the final norm
        assert launches(fused, light) == 4 * layers + 2 + lengths
    per_layer = 13 if phase != "naive" else 11  # a naive step appends no K and V
    tables = 3 if phase == "decode" else 0  # positions and the gathered rotary tables
    assert launches(ours, light) == per_layer * layers + 2 + lengths + tables
    # Both copy a prefill's heads-outer attention output; the fused final norm reads the last
    # tokens' strided rows where torch's first copies them (batch > 1).
    outputs = 0 if phase == "decode" else layers
    assert launches(fused, {"layout"}) == outputs
    assert launches(ours, {"layout"}) == outputs + (phase != "decode" and batch > 1)

    def light_bytes(kernels) -> float:
        return sum(k.count * k.work.cost.bytes_ for k in kernels if k.kind in light)

    assert light_bytes(fused) < light_bytes(ours)
    cal = Calibration.from_dict(json.loads(CALIBRATION.read_text())["calibration"])
    roof = Roof.from_spec(get_gpu("h200"))
    assert predict_step(fused, cal, roof).time_s < predict_step(ours, cal, roof).time_s


def test_recorded_plans_are_read_back_instead_of_declared_again():
    """A model run records each op call's plan as it ran (`step_plans`); the report predicts the
    step from those, whatever the implementations would declare in another process."""
    config = MODELS["llama3-8b"].with_layers(2)
    kernels = step_kernels(config, "triton", "decode", 4, 512)
    recorded = step_plans(kernels)
    gemv = [key for key in recorded if key.startswith("triton:gemv/")]
    assert gemv and all(":" in key for key in recorded)
    again = step_kernels(config, "triton", "decode", 4, 512, plans=recorded)
    assert [k.plan for k in again] == [k.plan for k in kernels]
    # A plan recorded with another split (as another process's tuner might have run it).
    key = gemv[0]
    split = next(k.plan for k in kernels if k.plan_key == key)
    other = "2 kernels: gemv grid 4x8x1 tile 4x64x128 split 8 partial 1; sum_splits grid 1 tile 8"
    changed = step_kernels(config, "triton", "decode", 4, 512, plans={**recorded, key: other})
    used = next(k.plan for k in changed if k.plan_key == key)
    assert used != split and used.launches == 2 and used.kernels[0].splits == 8


@pytest.mark.parametrize("batch", [1, 4])
def test_folded_gains_put_every_norm_of_a_gemv_step_in_an_epilogue(batch):
    """ "fused-folded" launches "fused"'s kernels but for the norms: at one row both fold them
    into the projections; at 2..16 rows "fused" runs each layer's two and the final one as
    kernels of their own, "fused-folded" none."""
    config = MODELS["llama3-8b"].with_layers(4)
    fused, folded = (step_kernels(config, b, "decode", batch, 512) for b in FUSED_BACKENDS)
    norms = {k.name: k.count for k in fused if k.kind == "norm"}
    assert not [k for k in folded if k.kind == "norm"]
    assert sum(norms.values()) == (0 if batch == 1 else 2 * config.num_layers + 1)
    assert [k.name for k in folded] == [k.name for k in fused if k.kind != "norm"]
    assert all(k.work.cost.flops > 2 * k.work.m * k.work.n * k.work.k
               for k in folded if k.name in ("qkv", "gate_up", "lm_head"))  # fmt: skip


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_from_batch_16_rotary_append_and_attention_are_one_kernel(backend):
    """At the one-kernel batch a fused decode step declares, per layer, one attention kernel
    (rotary, append and attention with its combine) in place of rotary + append and the split
    and combine passes, and no lengths' add; below it, the three. The bytes it adds to the
    attention are the rotary's own: the raw K and V rows, the tables and positions read, K
    and V written."""
    config = MODELS["llama3-8b"].with_layers(2)
    at = fused_step.ONE_KERNEL_ATTENTION_MIN_BATCH
    one = step_kernels(config, backend, "decode", at, 512)
    three = step_kernels(config, backend, "decode", at - 1, 512)
    names = {k.name for k in one}
    assert "rope_kv_append" not in names and "attend_lens" not in names
    assert {"rope_kv_append", "attend_lens"} <= {k.name for k in three}
    (attention,) = [k for k in one if k.kind == "attention"]
    assert attention.call == "rope_decode_attention" and attention.plan.launches == 1
    assert attention.count == config.num_layers
    split = [k for k in step_kernels(config, "triton", "decode", at, 512) if k.kind == "attention"]
    (op,) = split
    kv_row = 2 * at * config.kv_dim * 2  # bf16
    tables = 2 * at * (config.head_dim // 2) * 2 + 4 * at  # cos and sin rows, positions
    assert attention.work.cost.bytes_ == pytest.approx(op.work.cost.bytes_ + 2 * kv_row + tables)
