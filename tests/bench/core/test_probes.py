"""bench/core/probes.py: each calibration kernel on small CPU tensors (Triton's interpreter),
against torch or a hand-derived result, and touching only the memory it should."""

import torch

from roofbench.bench.core import probes

PROGRAMS, BLOCK, ITERS = 3, 16, 4
COVERED = PROGRAMS * BLOCK * ITERS  # elements the streaming kernels touch
TAIL = 8  # elements past them, which no program may touch


def test_read_sum_writes_one_partial_sum_per_program():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(COVERED + TAIL, generator=gen)
    x[COVERED:] = 1e6  # a read past the covered blocks would show in the last partial
    out = torch.full((PROGRAMS,), -1.0)
    probes.read_sum[(PROGRAMS,)](x, out, BLOCK=BLOCK, ITERS=ITERS)
    expected = x[:COVERED].view(PROGRAMS, BLOCK * ITERS).sum(dim=1)
    torch.testing.assert_close(out, expected)


def test_fill_writes_the_value_over_every_block_and_nothing_past():
    x = torch.zeros(COVERED + TAIL)
    probes.fill[(PROGRAMS,)](x, 2.5, BLOCK=BLOCK, ITERS=ITERS)
    assert torch.all(x[:COVERED] == 2.5)
    assert torch.all(x[COVERED:] == 0)


def test_copy_copies_every_block_and_nothing_past():
    src = torch.arange(COVERED + TAIL, dtype=torch.float32)
    dst = torch.full_like(src, -1.0)
    probes.copy[(PROGRAMS,)](src, dst, BLOCK=BLOCK, ITERS=ITERS)
    assert torch.equal(dst[:COVERED], src[:COVERED])
    assert torch.all(dst[COVERED:] == -1.0)


# dependent_rounds: round r of program p loads x[r * stride + p * BLOCK + lane + dep], dep being
# the value the lane loaded in round r - 1 (0 before the first). With a stride above
# PROGRAMS * BLOCK each round's region is followed by a gap no load of a zero buffer reaches.
ROUNDS = 3
LANES = PROGRAMS * BLOCK
STRIDE = LANES + 8


def test_dependent_rounds_over_zeros_reads_only_the_rounds_regions():
    x = torch.zeros(ROUNDS * STRIDE + TAIL, dtype=torch.int32)
    for r in range(ROUNDS):
        x[r * STRIDE + LANES : (r + 1) * STRIDE] = 7  # the gap after round r's region
    x[ROUNDS * STRIDE :] = 9  # past the last round
    out = torch.full((STRIDE,), -1, dtype=torch.int32)
    probes.dependent_rounds[(PROGRAMS,)](x, out, STRIDE, ROUNDS=ROUNDS, BLOCK=BLOCK)
    assert torch.all(out[:LANES] == 0)  # every load was a zero of some round's region
    assert torch.all(out[LANES:] == -1)  # one store per lane, nothing beyond


def test_dependent_rounds_address_follows_the_last_loaded_value():
    lane = 5
    x = torch.zeros(2 * STRIDE, dtype=torch.int32)
    x[lane] = 3  # round 0: this lane's dep becomes 3
    x[STRIDE + lane + 3] = 5  # round 1: where lane 5 then loads (lane 8 loads it too, dep 0)
    x[STRIDE + lane] = 11  # where lane 5 would load without the dependency: nobody does
    out = torch.empty(LANES, dtype=torch.int32)
    probes.dependent_rounds[(PROGRAMS,)](x, out, STRIDE, ROUNDS=2, BLOCK=BLOCK)
    expected = torch.zeros(LANES, dtype=torch.int32)
    expected[lane] = expected[lane + 3] = 5
    assert torch.equal(out, expected)


CHAIN_PROGRAMS, CHAIN_BLOCK, CHAIN_ITERS = 2, 32, 6


def chain_input():
    return torch.rand(CHAIN_PROGRAMS * CHAIN_BLOCK, generator=torch.Generator().manual_seed(1))


def test_exp2_chains_apply_exp2_of_minus_x_iters_times():
    x = chain_input()
    out = torch.empty_like(x)
    probes.exp2_chains[(CHAIN_PROGRAMS,)](x, out, ITERS=CHAIN_ITERS, BLOCK=CHAIN_BLOCK)
    expected = x.clone()
    for _ in range(CHAIN_ITERS):
        expected = torch.exp2(-expected)
    torch.testing.assert_close(out, expected)
    assert torch.all((out > 0) & (out <= 1))  # the chain stays in (0, 1]


def test_fma_chains_converge_towards_one_as_the_closed_form_says():
    x = chain_input()
    out = torch.empty_like(x)
    probes.fma_chains[(CHAIN_PROGRAMS,)](x, out, ITERS=CHAIN_ITERS, BLOCK=CHAIN_BLOCK)
    expected = x.clone()
    for _ in range(CHAIN_ITERS):
        expected = expected * 0.999 + 0.001
    torch.testing.assert_close(out, expected)
    # x -> 0.999 x + 0.001 has the fixed point 1: x_n = 1 + (x_0 - 1) * 0.999^n.
    torch.testing.assert_close(out, 1 + (x - 1) * 0.999**CHAIN_ITERS)
