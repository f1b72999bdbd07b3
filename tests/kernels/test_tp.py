"""kernels/tp: the Megatron split of the decoder gives the whole model's logits, in float64 on
fresh random weights and tokens: ranks as threads with a hand-made sum and gather, and as two
gloo processes through torch.distributed."""

import os
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from roofbench.kernels.llama import Llama
from roofbench.kernels.tp import TPLlama, draw_blocks, random_shard, shard_weights
from roofbench.theory.llm import ModelConfig
from roofbench.theory.tp import shard

TINY = ModelConfig(
    name="tiny",
    hidden_size=64,
    num_layers=2,
    num_heads=8,
    num_kv_heads=4,
    intermediate_size=96,
    vocab_size=80,
    head_dim=16,
)


class ThreadGroup:
    """`tp` ranks as threads: all-reduce (SUM, in place) and all-gather through a barrier."""

    def __init__(self, tp: int):
        self.tp, self.slots, self.barrier = tp, [None] * tp, threading.Barrier(tp)

    def ops(self, rank: int):
        def all_reduce(t):
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = sum(self.slots)
            self.barrier.wait()
            t.copy_(total)

        def all_gather(t):
            self.slots[rank] = t.clone()
            self.barrier.wait()
            parts = list(self.slots)
            self.barrier.wait()
            return parts

        return all_reduce, all_gather


def _phases(model, tokens):
    """Prefill logits, then two decode steps' logits."""
    batch, n = tokens.shape
    model.allocate_cache(batch, n + 4)
    out = [model.prefill(tokens)]
    lens = torch.full((batch,), n, dtype=torch.int32)
    for step in range(2):
        out.append(model.decode_step(tokens[:, step : step + 1], lens))
        lens += 1
    return out


def _run_threads(config, tp, weights, tokens):
    group, results = ThreadGroup(tp), [None] * tp

    def rank_main(rank):
        reduce, gather = group.ops(rank)
        model = TPLlama(config, weights, tp, rank, "torch", reduce, gather)
        results[rank] = _phases(model, tokens)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(tp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.parametrize(
    "config,tp",
    [(TINY, 2), (TINY, 4), (ModelConfig(**{**TINY.__dict__, "attention_bias": True}), 2)],
)
def test_the_split_decoder_matches_the_whole_one_in_float64(config, tp):
    seed = int(torch.randint(0, 10**6, ()).item())
    whole = Llama.random(config, "torch", "cpu", torch.float64, seed)
    tokens = torch.randint(0, config.vocab_size, (2, 6))
    expected = _phases(whole, tokens)
    for rank_out in _run_threads(config, tp, whole.weights, tokens):
        for got, want in zip(rank_out, expected, strict=True):
            assert got.shape == want.shape
            assert (got - want).abs().max().item() < 1e-10 * want.abs().max().item()


def test_a_shard_holds_its_share_of_every_projection():
    whole = Llama.random(TINY, "torch", "cpu", torch.float64, 1)
    parts = [shard_weights(TINY, whole.weights, 2, r) for r in range(2)]
    part = shard(TINY, 2)
    layer = parts[1].layers[0]
    assert layer.wqkv.shape == (part.q_dim + 2 * part.kv_dim, TINY.hidden_size)
    assert layer.wo.shape == (TINY.hidden_size, part.q_dim)
    assert layer.w_down.shape == (TINY.hidden_size, part.intermediate_size)
    # Rank 1's K rows are the whole model's K rows of the second half of the KV heads.
    k_rows = whole.weights.layers[0].wqkv[TINY.q_dim + part.kv_dim : TINY.q_dim + TINY.kv_dim]
    assert torch.equal(layer.wqkv[part.q_dim : part.q_dim + part.kv_dim], k_rows)
    # The LM head's vocab rows, concatenated over ranks, are the whole head.
    assert torch.equal(torch.cat([p.lm_head for p in parts]), whole.weights.lm_head)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        shard_weights(TINY, whole.weights, 2, 2)


def _gloo_rank(rank, tp, init_file, seed, out_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=tp)
    torch.manual_seed(seed)
    whole = Llama.random(TINY, "torch", "cpu", torch.float64, seed)
    tokens = torch.randint(0, TINY.vocab_size, (2, 5))
    got = _phases(TPLlama(TINY, whole.weights, tp, rank), tokens)
    want = _phases(whole, tokens)
    err = max((g - w).abs().max().item() for g, w in zip(got, want, strict=True))
    if rank == 0:
        torch.save({"err": err, "scale": want[0].abs().max().item()}, out_file)
    dist.destroy_process_group()


def test_two_gloo_processes_split_the_decoder_through_torch_distributed(tmp_path, monkeypatch):
    seed = int(torch.randint(0, 10**6, ()).item())
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # The spawned ranks unpickle _gloo_rank by its module's name; pytest's importlib mode does
    # not put the test's package on sys.path, which the children inherit.
    here = Path(__file__).resolve().parent
    for path in (here, here.parents[1]):
        monkeypatch.syspath_prepend(str(path))
    out = tmp_path / "err.pt"
    mp.spawn(_gloo_rank, args=(2, str(tmp_path / "init"), seed, str(out)), nprocs=2, join=True)
    result = torch.load(out)
    assert result["err"] < 1e-10 * result["scale"]


def _tensors(weights):
    """Every tensor of `weights` by name, in a fixed order (None where a bias is absent)."""
    out = {"embed": weights.embed, "norm": weights.norm, "lm_head": weights.lm_head}
    for i, layer in enumerate(weights.layers):
        out |= {f"{i}.{k}": v for k, v in layer.__dict__.items()}
    return out


BIASED = ModelConfig(**{**TINY.__dict__, "attention_bias": True, "mlp_bias": True})
TIED = ModelConfig(**{**TINY.__dict__, "tie_word_embeddings": True})


@pytest.mark.parametrize("config", [TINY, BIASED, TIED], ids=["plain", "biases", "tied"])
@pytest.mark.parametrize("tp", [2, 4])
def test_a_rank_draws_exactly_its_slice_of_the_whole_model_drawn_the_same_way(config, tp):
    assert draw_blocks(config) == 4  # gcd(8 heads, 4 KV heads, 96, 80)
    seed = int(torch.randint(0, 10**6, ()).item())
    whole = random_shard(config, 1, 0, "cpu", torch.float64, seed)
    for rank in range(tp):
        drawn = _tensors(random_shard(config, tp, rank, "cpu", torch.float64, seed))
        sliced = _tensors(shard_weights(config, whole, tp, rank))
        assert drawn.keys() == sliced.keys()
        for name, tensor in sliced.items():
            if tensor is None:
                assert drawn[name] is None, name
            else:
                assert torch.equal(drawn[name], tensor), name


def test_the_draw_holds_only_the_rank_s_part_and_its_blocks_are_independent():
    whole = _tensors(random_shard(TINY, 1, 0, "cpu", torch.float64, 3))
    part = _tensors(random_shard(TINY, 4, 1, "cpu", torch.float64, 3))
    for name in ("0.wqkv", "0.w_gate_up", "0.wo", "0.w_down", "lm_head"):
        assert part[name].numel() * 4 == whole[name].numel(), name
    # N(0, 1/fan_in): the whole Q|K|V has standard deviation 1/sqrt(hidden) = 0.125.
    assert 0.11 < whole["0.wqkv"].std().item() < 0.14
    assert 0.11 < whole["0.w_down"].std().item() * (96 / 64) ** 0.5 < 0.14
    # No two blocks, layers or seeds repeat one another.
    q_blocks = whole["0.wqkv"][: TINY.q_dim].reshape(4, -1)
    assert not torch.equal(q_blocks[0], q_blocks[1])
    assert not torch.equal(whole["0.wqkv"], whole["1.wqkv"])
    other = _tensors(random_shard(TINY, 1, 0, "cpu", torch.float64, 4))
    assert not torch.equal(other["0.wqkv"], whole["0.wqkv"])
    with pytest.raises(ValueError, match="does not split over TP=3"):
        random_shard(TINY, 3, 0)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        random_shard(TINY, 2, 2)


def test_ranks_built_from_their_own_draws_give_the_whole_model_s_logits():
    seed = int(torch.randint(0, 10**6, ()).item())
    whole = Llama(TINY, random_shard(TINY, 1, 0, "cpu", torch.float64, seed))
    tokens = torch.randint(0, TINY.vocab_size, (2, 5))
    expected = _phases(whole, tokens)
    group, results = ThreadGroup(2), [None, None]

    def rank_main(rank):
        reduce, gather = group.ops(rank)
        model = TPLlama.random_rank(
            TINY, 2, rank, "torch", "cpu", torch.float64, seed, all_reduce=reduce, all_gather=gather
        )
        results[rank] = _phases(model, tokens)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for rank_out in results:
        for got, want in zip(rank_out, expected, strict=True):
            assert (got - want).abs().max().item() < 1e-10 * want.abs().max().item()
