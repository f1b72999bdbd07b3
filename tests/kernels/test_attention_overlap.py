"""`kernels.attention_hopper` and its warp-specialized variant `kernels.attention_hopper_ws` as
Triton compiles them for sm_90 (no GPU needed): the schedule their plan declares (the softmax
beside the P V product) is what the compiled kernel does, their shared memory is the rings their
configurations name, and the warp-specialized one gives its partitions the registers it names."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compiled_attention_overlap.py")


@pytest.fixture(scope="module")
def compiled(compiled_json):
    return compiled_json(SCRIPT, timeout=600)


def test_every_configuration_compiles_for_sm90(compiled):
    from roofbench.kernels import attention_hopper as H
    from roofbench.kernels import attention_hopper_ws as W

    if compiled == [{"gluon": False}]:
        pytest.skip("this Triton has no Gluon")
    assert len(compiled) == len(H.HEAD_DIMS) * (len(H.CONFIGS) + len(W.CONFIGS))


def test_the_scores_are_waited_for_while_the_pv_product_runs(compiled):
    for x in (c for c in compiled if "cfg" in c):
        # Block 0's scores (0), block j's scores with P V of j-1 in flight (1), P V (0), the
        # last P V (0): the 1 is the overlap; a kernel that waits for everything has none.
        # The warp-specialized kernel has this sequence once per consumer warpgroup.
        consumers = 2 if x["cfg"].get("ws") else 1
        assert sorted(x["waits"]) == [0] * (3 * consumers) + [1] * consumers, x
        if consumers == 1:
            assert x["waits"] == [0, 1, 0, 0], x
        assert x["st_shared"] == 0, x  # P reaches the second product in registers


def test_warp_specialized_partitions_get_their_registers(compiled):
    from roofbench.kernels import attention_hopper_ws as W

    ws = [c for c in compiled if c.get("cfg", {}).get("ws")]
    for x in ws:
        # setmaxnreg to the consumers' and the producer's budgets
        assert {W.CONSUMER_REGS.value, W.PRODUCER_REGS.value} <= set(x["setmaxnreg"]), x
    assert all(not c["setmaxnreg"] for c in compiled if "cfg" in c and c not in ws)


def test_shared_memory_is_q_and_the_two_rings(compiled):
    for x in (c for c in compiled if "cfg" in c):
        cfg, d = x["cfg"], x["head_dim"]
        tiles = cfg["BLOCK_M"] + (cfg["K_STAGES"] + cfg["V_STAGES"]) * cfg["BLOCK_N"]
        rings = tiles * d * 2  # bf16
        assert rings <= x["shared"] <= rings + 1024, x  # and the mbarriers


def _float64_attention(q, k, v, causal):
    import torch

    return torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), is_causal=causal, enable_gqa=q.shape[1] != k.shape[1]
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    "batch, heads, kv_heads, seq, head_dim, dtype",
    [
        (2, 8, 2, 1000, 128, "bfloat16"),  # GQA 4, S not a multiple of any block
        (1, 28, 4, 640, 128, "float16"),  # GQA 7
        (1, 4, 1, 40, 128, "bfloat16"),  # S shorter than one block
        (1, 8, 8, 1030, 64, "bfloat16"),  # MHA, d = 64
        (1, 4, 2, 4096, 128, "bfloat16"),  # many blocks: every ring slot refilled many times
    ],
)
@pytest.mark.parametrize("causal", [True, False])
def test_every_configuration_matches_float64(batch, heads, kv_heads, seq, head_dim, dtype, causal):
    import torch

    from roofbench.kernels import attention_hopper as H
    from roofbench.kernels import attention_hopper_ws as W

    gen = torch.Generator(device="cuda").manual_seed(seq * 31 + heads)
    dt = getattr(torch, dtype)
    q = torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=dt, generator=gen)
    k, v = (
        torch.randn(batch, kv_heads, seq, head_dim, device="cuda", dtype=dt, generator=gen)
        for _ in range(2)
    )
    if not H.supported(q, k, v):
        pytest.skip("needs a Hopper GPU (sm_90) and a Triton with Gluon")
    want = _float64_attention(q, k, v, causal)
    tol = 2e-2 if dt == torch.bfloat16 else 4e-3  # P in the input dtype, randn inputs
    for kernel, cfg in [(H, c) for c in H.configs()] + [(W, c) for c in W.configs()]:
        out = torch.full_like(q, float("nan"))  # a row never written stays NaN
        kernel.launch(q, k, v, out, causal, head_dim**-0.5, cfg)
        err = (out.double() - want).abs().max().item()
        assert err < tol, (cfg, err)
