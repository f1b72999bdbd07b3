"""The Tuner's choice without a GPU: interleaved rounds, medians, and a deterministic tie."""

import math

from roofbench.kernels._util import TIE_FRACTION, Tuner, tuned_choice


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
