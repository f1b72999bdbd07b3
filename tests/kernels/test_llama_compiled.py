"""kernels/llama_compiled.py: the "compile" backend against the torch backend, compiled with
aot_eager on the CPU (dynamo's graphs and functionalisation, no C++ build) and with inductor in
bf16 on a GPU, its KV cache written in place and its decode step captured by DecodeGraph."""

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounterWithBackend
from torch._functorch.aot_autograd import make_boxed_func

from roofbench.kernels.llama import DecodeGraph, Llama, resolve_backend
from roofbench.kernels.llama_compiled import COMPILE, compile_with

from .test_llama import lens, tiny, tokens

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (inductor)")


def pair(compiler, config=None, **random):
    base = Llama.random(config or tiny(), "torch", **random)
    return base, compile_with(base.with_backend(COMPILE), compiler)


def run_phases(model, batch=2, n=6, steps=3, device="cpu"):
    """Prefill, `steps` ragged decode steps and a naive step: logits of each, and the cache
    (tokens and lengths on `device`, the model's)."""
    model.allocate_cache(batch, n + steps)
    out = [model.prefill(tokens(batch, n).to(device))]
    context = lens([n, n - 2][:batch]).to(device)
    for s in range(steps):
        out.append(model.decode_step(tokens(batch, 1, seed=s + 1).to(device), context))
        context.add_(1)
    cache = model.cache.kv.clone()
    out.append(model.naive_step(tokens(batch, n + 1, seed=9).to(device)))
    return out, cache


def test_the_compile_backend_runs_torch_implementations():
    assert resolve_backend(COMPILE) == resolve_backend("torch")
    with pytest.raises(ValueError, match="compile"):
        compile_with(Llama.random(tiny(), "torch"), "aot_eager")


def test_compiled_phases_match_the_torch_backend_and_keep_the_cache():
    counter = CompileCounterWithBackend("aot_eager")
    base, compiled = pair(counter)
    expected, cache = run_phases(base)
    got, got_cache = run_phases(compiled)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-5)
    # The KV writes of prefill and decode survive compilation (the eager cache, every slot).
    assert torch.equal(got_cache, cache) and got_cache.abs().sum() > 0
    # Compiled, not eager: one graph each for prefill, decode and naive; the decode steps of one
    # shape reuse theirs, the lengths being device tensors.
    assert counter.frame_count == 3
    run_phases(compiled)
    assert counter.frame_count == 3


def test_the_cache_is_written_by_index_put_not_by_a_scatter_over_a_copy():
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    _, compiled = pair(aot_autograd(fw_compiler=keep))
    run_phases(compiled, steps=1)
    targets = [str(node.target) for gm in graphs for node in gm.graph.nodes]
    assert len(graphs) == 3 and any("index_put" in t for t in targets)
    copies = [t for t in targets if "scatter" in t]
    assert not copies, f"functionalised scatters copy the cache: {copies}"


@pytest.mark.gpu
@gpu
def test_inductor_bf16_matches_the_torch_backend():
    config = tiny(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512, layers=2)
    base, compiled = pair("inductor", config, device="cuda", dtype=torch.bfloat16)
    torch.manual_seed(0)
    expected, cache = run_phases(base, device="cuda")
    got, got_cache = run_phases(compiled, device="cuda")
    for e, g in zip(expected, got, strict=True):
        assert (g.float() - e.float()).norm() <= 2e-2 * e.float().norm()
    assert (got_cache.float() - cache.float()).norm() <= 2e-2 * cache.float().norm()


@pytest.mark.gpu
@gpu
def test_decode_graph_captures_and_replays_the_compiled_step():
    config = tiny(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512, layers=2)
    base, compiled = pair("inductor", config, device="cuda", dtype=torch.bfloat16)
    toks, context = tokens(2, 1).cuda(), lens([5, 3]).cuda()
    for model in (base, compiled):
        model.allocate_cache(2, 16).fill_random_(seed=1)
    expected = [base.decode_step(toks, context + s).float() for s in range(3)]
    graph = DecodeGraph(compiled, toks, context)
    compiled.cache.fill_random_(seed=1)  # the warm-up steps wrote slots 5 and 3
    got = [graph.step(toks).float().clone() for _ in range(3)]
    for e, g in zip(expected, got, strict=True):
        assert (g - e).norm() <= 2e-2 * e.norm()
    assert torch.equal(graph.context_lens.cpu(), lens([8, 6]))
