"""The reason a forced SDPA backend's refusal is recorded with: torch's rule, in one sentence."""

import warnings

from roofbench.kernels.sdpa import _reason

EFFICIENT = (
    "For dense input, both fused kernels require query, key and value to have the same num_heads. "
    "Query.sizes(): [1, 32, 512, 128], Key sizes(): [1, 8, 512, 128], Value sizes(): "
    "[1, 8, 512, 128] instead. To broadcast dense inputs, try using unsqueeze and expand_to before "
    "passing them into the kernel. (Triggered internally at /src/sdp_utils_cpp.h:418.)"
)
DISABLED = "Flash attention has been runtime disabled. (Triggered internally at /src/x.h:540.)"
GENERIC = "Memory efficient kernel not used because:"


def warned(*texts):
    return [warnings.WarningMessage(t, UserWarning, "f.py", 1) for t in texts]


def test_the_rule_that_failed_in_one_sentence_without_the_source_location():
    reason = _reason(warned(GENERIC, EFFICIENT, DISABLED))
    assert reason == (
        "For dense input, both fused kernels require query, key and value to have the same "
        "num_heads."
    )


def test_only_generic_lines_are_kept_rather_than_nothing():
    assert _reason(warned(DISABLED)) == "Flash attention has been runtime disabled."
    assert _reason([]) == ""
