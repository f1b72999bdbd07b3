"""FLOPs and minimum HBM bytes of each op the suite measures.

Conventions (one place for every formula in the project):

- A multiply-add is 2 FLOPs. Softmax, scaling and masking are not counted (the FlashAttention
  convention: attention FLOPs are the two matrix products only).
- Bytes are the compulsory traffic: each input read once and each output written once, at the
  element size of its dtype. Re-reads a real kernel makes (tiles, cache misses) are not counted, so
  `bytes_` is a floor on what any implementation moves.
- Arithmetic intensity = flops / bytes_ (FLOP per byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Bytes per element. tf32 is stored as fp32.
DTYPE_BYTES: dict[str, int] = {
    "fp64": 8,
    "fp32": 4,
    "tf32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
}


def dtype_bytes(dtype: str) -> int:
    """Element size of `dtype` in bytes; raises ValueError naming the known dtypes."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        known = ", ".join(DTYPE_BYTES)
        raise ValueError(f"unknown dtype {dtype!r} (known: {known})") from None


@dataclass(frozen=True)
class OpCost:
    """Work of one op: floating-point operations and compulsory bytes of HBM traffic, of which
    `bytes_written` are the outputs (the rest is read)."""

    flops: float
    bytes_: float
    bytes_written: float = 0.0

    @property
    def bytes_read(self) -> float:
        return self.bytes_ - self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP/byte (inf for an op that moves no bytes)."""
        return self.flops / self.bytes_ if self.bytes_ else float("inf")

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(
            self.flops + other.flops,
            self.bytes_ + other.bytes_,
            self.bytes_written + other.bytes_written,
        )

    def __mul__(self, times: float) -> OpCost:
        return OpCost(self.flops * times, self.bytes_ * times, self.bytes_written * times)

    __rmul__ = __mul__


def _positive(**sizes: float) -> None:
    for name, value in sizes.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _group(heads: int, kv_heads: int) -> None:
    _positive(heads=heads, kv_heads=kv_heads)
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of KV heads ({kv_heads})")


def gemm(m: int, n: int, k: int, dtype: str = "bf16") -> OpCost:
    """C[m,n] = A[m,k] @ W[n,k]^T.

    flops = 2*m*n*k; bytes = (m*k + n*k + m*n) * element size (A and W read once, C written once).
    """
    _positive(m=m, n=n, k=k)
    size = dtype_bytes(dtype)
    return OpCost(2.0 * m * n * k, float(m * k + n * k + m * n) * size, float(m * n * size))


def gemv(n: int, k: int, m: int = 1, dtype: str = "bf16") -> OpCost:
    """The decode case of `gemm`: a few token rows (m) against a weight matrix [n,k].

    Same count as `gemm`; at small m the weight term n*k dominates the bytes, so the intensity is
    about m FLOP/byte for 2-byte dtypes: memory-bound.
    """
    return gemm(m, n, k, dtype)


def gemv_epilogue(
    n: int,
    k: int,
    m: int = 1,
    dtype: str = "bf16",
    norm: bool = False,
    bias: bool = False,
    glu: bool = False,
    residual: bool = False,
) -> OpCost:
    """`gemv` with the element-wise work around it done in the same kernel (a fused decoder's
    projection): `norm` the input rows' RMSNorm (gain [k] read; each row's sum of squares
    2*m*k flops, its 1/rms scales the m*n sums), `bias` [n] read and added, `glu` W's rows are
    gate|up halves and the output is SiLU(gate) x up [m, n/2] (about 5 flops per output:
    exp, add, divide, two products), `residual` [m, n_out] read and added to the output.

    flops = 2*m*n*k + norm: 2*m*k + m*n; + bias: m*n; + glu: 5*m*n/2; + residual: m*n_out
    bytes = m*k + n*k + m*n_out (+ k, + n, + m*n_out) element sizes.
    """
    _positive(m=m, n=n, k=k)
    if glu and n % 2:
        raise ValueError(f"a gate|up product has an even number of rows, got n={n}")
    size = dtype_bytes(dtype)
    n_out = n // 2 if glu else n
    flops = 2.0 * m * n * k
    read = m * k + n * k
    if norm:
        flops += 2.0 * m * k + m * n
        read += k
    if bias:
        flops += m * n
        read += n
    if glu:
        flops += 2.5 * m * n
    if residual:
        flops += m * n_out
        read += m * n_out
    written = m * n_out * size
    return OpCost(flops, float(read * size + written), float(written))


def causal_pairs(queries: int, keys: int) -> int:
    """(query, key) pairs a causal mask keeps when the queries are the last `queries` of `keys`.

    Query i (0-based) sits at position keys - queries + i and sees that many keys plus itself:
    sum_{i<queries} (keys - queries + i + 1) = queries*(keys - queries) + queries*(queries+1)/2.
    For queries == keys == S this is S*(S+1)/2: slightly more than half of S^2.
    """
    _positive(queries=queries, keys=keys)
    if queries > keys:
        raise ValueError(f"queries ({queries}) cannot exceed keys ({keys})")
    return queries * (keys - queries) + queries * (queries + 1) // 2


def prefill_attention(
    batch: int,
    heads: int,
    kv_heads: int,
    seq: int,
    head_dim: int,
    causal: bool = True,
    dtype: str = "bf16",
) -> OpCost:
    """Attention of `seq` queries over `seq` keys, per sequence and query head.

    flops = 4 * batch * heads * pairs * head_dim: 2*head_dim for the score q.k and 2*head_dim for
    the weighted sum of V, per (query, key) pair; pairs = seq^2 (full) or `causal_pairs` (causal).
    bytes = Q and O (batch*heads*seq*head_dim each) + K and V (batch*kv_heads*seq*head_dim each):
    with GQA each KV head is read once for the query heads that share it.
    """
    _positive(batch=batch, seq=seq, head_dim=head_dim)
    _group(heads, kv_heads)
    pairs = causal_pairs(seq, seq) if causal else seq * seq
    flops = 4.0 * batch * heads * pairs * head_dim
    elements = 2 * batch * heads * seq * head_dim + 2 * batch * kv_heads * seq * head_dim
    written = float(batch * heads * seq * head_dim * dtype_bytes(dtype))  # O
    return OpCost(flops, float(elements) * dtype_bytes(dtype), written)


def decode_attention(
    batch: int,
    heads: int,
    kv_heads: int,
    context: int | Sequence[int],
    head_dim: int,
    dtype: str = "bf16",
) -> OpCost:
    """One query token per sequence against its KV cache of `context` tokens.

    `context` is one length for the whole batch or one per sequence (a ragged batch).
    flops = 4 * heads * head_dim * sum(context); bytes = K and V read once
    (2 * kv_heads * head_dim * sum(context)) + q read and o written (2 * batch * heads * head_dim).
    """
    _positive(batch=batch, head_dim=head_dim)
    _group(heads, kv_heads)
    if isinstance(context, int):  # one length for all: O(1), whatever the batch
        _positive(context=context)
        tokens = context * batch
    else:
        lengths = list(context)
        if len(lengths) != batch:
            raise ValueError(f"{len(lengths)} context lengths given for batch {batch}")
        for length in lengths:
            _positive(context=length)
        tokens = sum(lengths)
    flops = 4.0 * heads * head_dim * tokens
    elements = 2 * kv_heads * head_dim * tokens + 2 * batch * heads * head_dim
    written = float(batch * heads * head_dim * dtype_bytes(dtype))  # o
    return OpCost(flops, float(elements) * dtype_bytes(dtype), written)


def read(nbytes: float, element_bytes: int = 4) -> OpCost:
    """A reduction over `nbytes` (a sum): one add per element, every byte read once, and a
    single element written."""
    _positive(nbytes=nbytes)
    return OpCost(nbytes / element_bytes, float(nbytes + element_bytes), float(element_bytes))


def copy(nbytes: float) -> OpCost:
    """A device-to-device copy of `nbytes`: no FLOPs, every byte read once and written once."""
    _positive(nbytes=nbytes)
    return OpCost(0.0, 2.0 * nbytes, float(nbytes))


def fill(nbytes: float) -> OpCost:
    """A write of `nbytes` (a fill): no FLOPs, every byte written once, none read."""
    _positive(nbytes=nbytes)
    return OpCost(0.0, float(nbytes), float(nbytes))


# --- the element-wise kernels of a decoder (norms, rotary, activation, residual, gathers) -------
#
# Kernels that stream their operands and do a few arithmetic operations per element. Their
# arithmetic is not counted (as softmax and scaling are not): on any GPU they are bound by their
# bytes, a launch and a fixed cost, never by FLOPs.


def elementwise(bytes_read: float, bytes_written: float) -> OpCost:
    """A streaming kernel: no FLOPs counted; bytes = bytes_read + bytes_written (each operand read
    once, a broadcast operand at its own size, not at the size it is broadcast to)."""
    if bytes_read < 0 or bytes_written <= 0:
        raise ValueError(
            f"an element-wise kernel reads >= 0 and writes > 0 bytes, got {bytes_read}, "
            f"{bytes_written}"
        )
    return OpCost(0.0, float(bytes_read + bytes_written), float(bytes_written))


def rms_norm(rows: int, hidden: int, dtype: str = "bf16") -> OpCost:
    """y = x / sqrt(mean(x^2) + eps) * gain over rows of `hidden` elements, one fused kernel:
    x [rows, hidden] and gain [hidden] read, y [rows, hidden] written:
    bytes = (2 * rows * hidden + hidden) * element size."""
    _positive(rows=rows, hidden=hidden)
    size = dtype_bytes(dtype)
    return elementwise(float((rows * hidden + hidden) * size), float(rows * hidden * size))


def gather(rows: int, row_bytes: float, index_bytes: float) -> OpCost:
    """`rows` rows of `row_bytes` each, copied by an index (an embedding lookup, an index_select,
    a scatter into the KV cache): the index and the rows read once, the rows written once:
    bytes = index_bytes + 2 * rows * row_bytes."""
    _positive(rows=rows, row_bytes=row_bytes, index_bytes=index_bytes)
    return elementwise(float(index_bytes + rows * row_bytes), float(rows * row_bytes))
