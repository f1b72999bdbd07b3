"""theory/tp: the Megatron split of the decoder's shapes and the TP step = per-GPU step + the
collectives, against hand-computed figures."""

import pytest

from roofbench.theory import comm, llm, tp
from roofbench.theory.hardware import get_gpu
from roofbench.theory.roofline import Roof

H200 = get_gpu("h200")


def test_llama3_70b_at_tp8_holds_one_kv_head_per_gpu():
    full = llm.MODELS["llama3-70b"]
    part = tp.shard(full, 8)
    assert (part.num_heads, part.num_kv_heads, part.intermediate_size) == (8, 1, 3584)
    assert part.vocab_size == 128256 // 8 and part.head_dim == 128 and part.hidden_size == 8192
    # The projections split exactly; only the two norms of each layer are held by every GPU.
    assert 8 * part.layer_params() - full.layer_params() == 2 * full.hidden_size * 7
    assert 8 * part.kv_cache_bytes_per_token() == full.kv_cache_bytes_per_token()


def test_a_size_that_does_not_split_is_named():
    with pytest.raises(ValueError, match="num_kv_heads \\(8\\) does not split over TP=16"):
        tp.shard(llm.MODELS["llama3-8b"], 16)
    with pytest.raises(ValueError, match="positive"):
        tp.shard(llm.MODELS["llama3-8b"], 0)
    assert tp.shard(llm.MODELS["llama3-8b"], 1) == llm.MODELS["llama3-8b"]


def test_tp2_decode_of_70b_adds_160_all_reduces_and_one_gather_by_hand():
    model, link = llm.MODELS["llama3-70b"], comm.Link.from_spec(H200)
    roof = Roof.from_spec(H200)
    step = tp.decode_step(model, roof, link, 2, context=1024, batch=1)
    assert step.all_reduces == 160
    # One all-reduce of 8192 bf16 (16384 B) over 2 ranks: a ring of 2 steps of 0.6 us and
    # 16384 B at 450 GB/s; the logits all-gather: 1 step and half of 128256 x 2 B.
    reduce_s = 2 * 0.6e-6 + 16384 / 450e9
    gather_s = 0.6e-6 + 128256 / 450e9
    assert step.all_reduce.time_s == pytest.approx(reduce_s)
    assert step.all_gather.time_s == pytest.approx(gather_s)
    assert step.comm_s == pytest.approx(160 * reduce_s + gather_s)
    per_gpu = llm.decode_step(tp.shard(model, 2), roof, 1024, 1)
    assert step.time_s == pytest.approx(per_gpu.time_s + 160 * reduce_s + gather_s)


def test_splitting_halves_the_memory_bound_decode_but_adds_communication():
    model, roof, link = llm.MODELS["llama3-70b"], Roof.from_spec(H200), comm.Link.from_spec(H200)
    one = tp.decode_step(model, roof, link, 1, context=4096)
    two = tp.decode_step(model, roof, link, 2, context=4096)
    eight = tp.decode_step(model, roof, link, 8, context=4096)
    assert one.comm_s == 0 and one.time_s == llm.decode_step(model, roof, 4096).time_s
    assert 0.5 < two.per_gpu_s / one.per_gpu_s < 0.51  # half the weights, plus a norm or two
    assert eight.time_s < two.time_s < one.time_s
    assert eight.comm_s > two.comm_s  # 14 steps per all-reduce instead of 2


def test_prefill_all_reduces_carry_every_token():
    model, roof, link = llm.MODELS["llama3-8b"], Roof.from_spec(H200), comm.Link.from_spec(H200)
    step = tp.prefill(model, roof, link, 4, prompt_tokens=2048, batch=2)
    assert step.all_reduce.size_bytes == 2 * 2048 * 4096 * 2
    assert step.all_gather.size_bytes == 2 * 128256 * 2  # the last token of each prompt
    assert step.all_reduces == 64


def test_phase_picks_prefill_or_decode_and_names_what_it_does_not_know():
    model, roof, link = llm.MODELS["llama3-70b"], Roof.from_spec(H200), comm.Link.from_spec(H200)
    assert tp.phase(model, roof, link, 2, "tbt", 4, 1024) == tp.decode_step(
        model, roof, link, 2, 1024, 4
    )
    ttft = tp.phase(model, roof, link, 8, "ttft", 1, 512)
    assert ttft == tp.prefill(model, roof, link, 8, 512, 1)
    assert ttft.all_reduce.size_bytes == 512 * 8192 * 2
    with pytest.raises(ValueError, match="op must be one of ttft, tbt"):
        tp.phase(model, roof, link, 2, "naive_step", 1, 8)
