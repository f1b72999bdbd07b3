"""The Tuner's choice without a GPU: interleaved rounds, medians, a deterministic tie, and the
rotating launches a kernel may hand its timer."""

import math

import pytest
import torch

from roofbench.kernels._util import (
    MAX_ROTATION_SETS,
    TIE_FRACTION,
    Rotation,
    Tuner,
    l2_bytes,
    rotation_sets,
    tuned_choice,
)


def scripted(times_by_call):
    """A timer that returns the next scripted time of the candidate just launched."""
    calls = []

    def time_s(fn):
        fn()
        cfg = calls[-1]
        return times_by_call[cfg].pop(0)

    def launch(cfg):
        calls.append(cfg["id"])

    return time_s, launch, calls


def test_rounds_are_interleaved_and_a_transient_in_one_round_does_not_decide():
    # Candidate a is fastest, but its first timing caught a clock step (3x slow).
    time_s, launch, calls = scripted({"a": [30.0, 10.0, 10.0], "b": [12.0, 12.0, 12.0]})
    tuner = Tuner(time_s=time_s, rounds=3)
    assert tuner.pick("k", lambda: [{"id": "a"}, {"id": "b"}], launch) == {"id": "a"}
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert [t for _, t in tuner.timings["k"]] == [10.0, 12.0]


def test_within_the_tie_fraction_the_earlier_candidate_wins_whatever_the_noise():
    fast = 10.0
    near = fast * (1 + TIE_FRACTION / 2)
    cfg, t = tuned_choice([({"id": "first"}, [near]), ({"id": "second"}, [fast])])
    assert cfg == {"id": "first"} and t == near
    far = fast * (1 + 2 * TIE_FRACTION)
    assert tuned_choice([({"id": "first"}, [far]), ({"id": "second"}, [fast])])[0] == {
        "id": "second"
    }


def test_a_failing_candidate_is_dropped_and_all_failing_is_none():
    assert tuned_choice([({"id": 1}, []), ({"id": 2}, [5.0])]) == ({"id": 2}, 5.0)
    assert tuned_choice([({"id": 1}, [])]) == (None, math.inf)


def test_make_timed_is_built_once_and_its_callable_is_what_the_timer_gets():
    built, timed_cfgs = [], []

    def make_timed():
        built.append(1)
        return lambda cfg: Rotation([lambda: timed_cfgs.append(cfg["id"])] * 2)

    def time_s(fn):
        assert isinstance(fn, Rotation) and len(fn) == 2  # the rotation itself, not a wrapper
        fn()
        return {"a": 2.0, "b": 1.0}[timed_cfgs[-1]]

    tuner = Tuner(time_s=time_s, rounds=2)
    launched = []
    cfgs = [{"id": "a"}, {"id": "b"}]
    assert tuner.pick("k", lambda: cfgs, launched.append, make_timed) == {"id": "b"}
    assert built == [1] and timed_cfgs == ["a", "b", "a", "b"]
    assert launched == []  # tuning timed the rotations only


def test_rotation_moves_to_the_next_set_on_every_call():
    seen = []
    rot = Rotation([lambda i=i: seen.append(i) for i in range(3)])
    for _ in range(7):
        rot()
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="at least one"):
        Rotation([])


def test_rotation_sets_copy_the_inputs_until_they_hold_min_bytes():
    a, w = torch.randn(4, 8), torch.randn(16, 8)  # 128 + 512 bytes of fp32
    sets = rotation_sets((a, w), 3000)
    assert len(sets) == 5  # ceil(3000 / 640)
    assert sets[0][0] is a and sets[0][1] is w
    for copy_a, copy_w in sets[1:]:
        assert copy_a.data_ptr() != a.data_ptr() and torch.equal(copy_a, a)
        assert torch.equal(copy_w, w)
    assert rotation_sets((a, w), 640) == [(a, w)]  # one set already holds enough
    assert len(rotation_sets((a, w), 10**9)) == MAX_ROTATION_SETS  # tiny inputs: capped
    assert l2_bytes(torch.device("cpu")) == 0
