"""The bytes in flight a plan declares for a program of our GEMV and split-KV decode kernels (the
T5 term `theory.tiers.read_bandwidth` reads them) against the kernels as Triton compiles them for
sm_90: `compiled_inflight.py` compiles them in a process of its own, without the interpreter."""

from pathlib import Path

SCRIPT = Path(__file__).with_name("compiled_inflight.py")


def test_declared_bytes_in_flight_are_what_the_compiled_kernels_keep(compiled_json):
    lines = compiled_json(SCRIPT)
    gemv = [x for x in lines if x["kernel"] in ("gemv", "gemv_epilogue", "gemv_packed")]
    decode = [x for x in lines if x["kernel"] == "decode_split"]
    assert len(gemv) == 9 and len(decode) == 2
    for x in gemv:
        bm, bn, bk = x["tile"]
        if bm == 1:  # loads into registers, one K step of the weight rows and x at a time
            assert not x["cp_async"], x
            assert x["declared"] == (bn + 1) * bk * 2, x
        elif x["kernel"] in ("gemv", "gemv_packed"):  # asynchronous copies into the
            assert x["cp_async"] and x["shared"] == x["declared"], x  # shared ring: the tiles'
        else:  # the ring, and beside it no more than the epilogue's fp32 tiles: the output and
            # the norm's x x^T
            assert x["cp_async"] and 0 <= x["shared"] - x["declared"] <= (bn + bm) * bm * 4, x
    for x in decode:
        block_h, _, head_dim = x["tile"]
        # The K/V ring, and beside it no more than the query tile (fp32) of shared memory.
        assert x["cp_async"] and 0 <= x["shared"] - x["declared"] <= block_h * head_dim * 4, x
