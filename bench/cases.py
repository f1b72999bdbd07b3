"""The cases a sweep measures, declared as data.

A case is one op at one shape and dtype; every case is measured for each implementation (our
Triton kernel and the torch reference). Its FLOPs and bytes come from `theory.ops`.

Sweeps:
- GEMM/GEMV: M = 1, 2, 4, ..., 8192 token rows through the linear layers of Llama 3 8B and 70B
  (shapes from `theory.llm`); M <= 16 is the decode case and uses the GEMV kernel.
- Prefill attention: S = 512 ... 32768, batch 1 and 8, Llama 3 8B heads (32 query, 8 KV, d=128).
- Decode attention: batch 1 ... 256 x context 512 ... 131072, the same heads.
`quick` (the default) is a subset that runs in a few minutes; `full` is all of the above.
"""

from __future__ import annotations

from dataclasses import dataclass

from roofbench.theory import ops
from roofbench.theory.llm import MODELS
from roofbench.theory.ops import OpCost

OPS = ("gemm", "gemv", "prefill_attention", "decode_attention")
IMPLS = ("triton", "torch")
GEMV_MAX_M = 16  # the GEMV kernel serves 1..16 token rows; beyond that it is a GEMM


@dataclass(frozen=True)
class Case:
    """One op at one shape; unused shape fields stay None."""

    op: str
    dtype: str = "bf16"
    m: int | None = None
    n: int | None = None
    k: int | None = None
    batch: int | None = None
    seq: int | None = None  # prefill sequence or decode context length
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    causal: bool = True
    source: str = ""  # where the shape comes from, e.g. "llama3-8b down_proj"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r} (known: {', '.join(OPS)})")
        self.cost()  # validates the sizes through theory

    @property
    def id(self) -> str:
        """A stable name shared by every implementation of this case (the compare key)."""
        if self.op in ("gemm", "gemv"):
            shape = f"m{self.m}_n{self.n}_k{self.k}"
        else:
            mask = "" if self.op == "decode_attention" else ("_causal" if self.causal else "_full")
            shape = (
                f"b{self.batch}_s{self.seq}_h{self.heads}_kv{self.kv_heads}_d{self.head_dim}{mask}"
            )
        return f"{self.op}/{shape}/{self.dtype}"

    def cost(self) -> OpCost:
        """FLOPs and compulsory bytes, from `theory.ops`."""
        if self.op in ("gemm", "gemv"):
            return ops.gemm(self.m, self.n, self.k, self.dtype)
        if self.op == "prefill_attention":
            return ops.prefill_attention(
                self.batch,
                self.heads,
                self.kv_heads,
                self.seq,
                self.head_dim,
                self.causal,
                self.dtype,
            )
        return ops.decode_attention(
            self.batch, self.heads, self.kv_heads, self.seq, self.head_dim, self.dtype
        )

    def shape_fields(self) -> dict:
        """The shape columns of a record."""
        keys = ("batch", "seq", "m", "n", "k", "heads", "kv_heads", "head_dim")
        return {key: getattr(self, key) for key in keys}


def linear_cases(models: tuple[str, ...], ms: tuple[int, ...], dtype: str = "bf16") -> list[Case]:
    """GEMM/GEMV cases for each distinct linear-layer shape of `models` at each M in `ms`."""
    layers: dict[tuple[int, int], list[str]] = {}
    for name in models:
        for layer, shape in MODELS[name].linear_shapes().items():
            layers.setdefault(shape, []).append(f"{name} {layer}")
    return [
        Case("gemv" if m <= GEMV_MAX_M else "gemm", dtype, m=m, n=n, k=k, source=", ".join(names))
        for (n, k), names in layers.items()
        for m in ms
    ]


def _llama8b_heads() -> dict:
    model = MODELS["llama3-8b"]
    return {"heads": model.num_heads, "kv_heads": model.num_kv_heads, "head_dim": model.head_dim}


def prefill_cases(seqs, batches, dtype: str = "bf16") -> list[Case]:
    heads = _llama8b_heads()
    return [
        Case("prefill_attention", dtype, batch=b, seq=s, source="llama3-8b attention", **heads)
        for b in batches
        for s in seqs
    ]


def decode_cases(batches, contexts, dtype: str = "bf16") -> list[Case]:
    heads = _llama8b_heads()
    return [
        Case("decode_attention", dtype, batch=b, seq=c, source="llama3-8b attention", **heads)
        for b in batches
        for c in contexts
    ]


def _powers_of_two(low: int, high: int) -> tuple[int, ...]:
    return tuple(1 << e for e in range(low.bit_length() - 1, high.bit_length()))


def sweep(name: str) -> list[Case]:
    """The cases of sweep `name` (`quick` or `full`), in the order they are measured."""
    if name == "quick":
        return (
            linear_cases(("llama3-8b",), (1, 4, 16, 64, 256, 1024, 4096))
            + prefill_cases((512, 2048, 8192), (1,))
            + decode_cases((1, 16, 64), (1024, 8192, 32768))
        )
    if name == "full":
        return (
            linear_cases(("llama3-8b", "llama3-70b"), _powers_of_two(1, 8192))
            + prefill_cases(_powers_of_two(512, 32768), (1, 8))
            + decode_cases(_powers_of_two(1, 256), _powers_of_two(512, 131072))
        )
    raise ValueError(f"unknown sweep {name!r} (known: {', '.join(SWEEPS)})")


SWEEPS = ("quick", "full")
