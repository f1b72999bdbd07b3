"""`roofbench predict`: the theory's figures for one model, GPU and request shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from roofbench.theory.hardware import GpuSpec
from roofbench.theory.llm import InferencePrediction, Phase, load_model, predict
from roofbench.theory.ops import OpCost
from roofbench.theory.roofline import Roof


def _phase_dict(phase: Phase) -> dict:
    return {
        "flops": phase.flops,
        "bytes": phase.bytes_,
        "intensity": phase.intensity,
        "time_s": phase.time_s,
        "bound": phase.bound,
    }


def prediction_dict(p: InferencePrediction, gpu: GpuSpec, roof: Roof) -> dict:
    """The JSON object of `roofbench predict --json`."""
    return {
        "model": p.model.name,
        "gpu": gpu.slug,
        "dtype": p.dtype,
        "batch": p.batch,
        "prompt_tokens": p.prompt_tokens,
        "context": p.context,
        "generate": p.generate,
        "attention": "causal" if p.causal else "full",
        "roof": {
            "peak_tflops": roof.peak_flops / 1e12,
            "bandwidth_gbps": roof.bandwidth_bytes_per_s / 1e9,
            "launch_s": roof.launch_s,
            "ridge_flop_per_byte": roof.ridge,
            "source": roof.source,
        },
        "params": p.model.params,
        "weights_bytes": p.model.weights_bytes(p.dtype),
        "kv_cache_bytes_per_token": p.kv_cache_bytes_per_token,
        "kv_cache_bytes": p.model.kv_cache_bytes(p.context, p.batch, p.dtype),
        "prefill": _phase_dict(p.prefill),
        "decode": _phase_dict(p.decode),
        "ttft_s": p.ttft_s,
        "tbt_s": p.tbt_s,
        "tps": p.tps,
        "latency_s": p.latency_s,
        "throughput_tokens_per_s": p.throughput_tokens_per_s,
    }


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _seconds(value: float) -> str:
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def render(data: dict, console: Console) -> None:
    """A table for people: the model, the two phases side by side, then the request metrics."""
    console.print(
        f"[bold]{data['model']}[/] on [bold]{data['gpu']}[/] ({data['dtype']}, "
        f"{data['attention']} attention): {_si(data['params'], '')}params, "
        f"{_si(data['weights_bytes'], 'B')} of weights, "
        f"{_si(data['kv_cache_bytes_per_token'], 'B')} of KV cache per token"
    )
    roof = data["roof"]
    console.print(
        f"roof: {roof['peak_tflops']:.1f} TFLOP/s, {roof['bandwidth_gbps']:.0f} GB/s, ridge "
        f"{roof['ridge_flop_per_byte']:.0f} FLOP/byte ({roof['source']})"
    )
    table = Table(title=f"batch {data['batch']}")
    for column in ("phase", "FLOPs", "bytes", "FLOP/byte", "time", "bound"):
        table.add_column(column, justify="left" if column in ("phase", "bound") else "right")
    labels = {
        "prefill": f"prefill {data['prompt_tokens']} tokens",
        "decode": f"decode step at {data['context']}",
    }
    for key, label in labels.items():
        phase = data[key]
        table.add_row(
            label,
            _si(phase["flops"], ""),
            _si(phase["bytes"], "B"),
            f"{phase['intensity']:,.1f}",
            _seconds(phase["time_s"]),
            phase["bound"],
        )
    console.print(table)
    console.print(
        f"TTFT {_seconds(data['ttft_s'])}   TBT {_seconds(data['tbt_s'])}   "
        f"TPS {data['tps']:.3g}/s   latency for {data['generate']} tokens "
        f"{_seconds(data['latency_s'])}   throughput {data['throughput_tokens_per_s']:.3g} tokens/s"
    )


def run_predict(args, console: Console) -> int:
    from roofbench.bench.core.gpu import resolve_gpu

    model = load_model(args.model)
    if args.context is not None and args.context < args.prompt_tokens:
        raise ValueError(
            f"--context {args.context} is shorter than the prompt ({args.prompt_tokens} tokens): "
            "a decode step after that prompt holds at least the prompt"
        )
    cal, doc = None, None
    if getattr(args, "calibration", None):
        from roofbench.bench.core.calibrate import calibration_of

        path = Path(args.calibration)
        if not path.is_file():
            raise ValueError(f"--calibration {path}: no such file")
        doc = json.loads(path.read_text())
        cal = calibration_of(doc)
    # The calibrated GPU's datasheet beside its calibration, unless --gpu names another.
    gpu = resolve_gpu(args.gpu or (doc["device"]["name"] if doc else None))
    roof = Roof.from_spec(gpu, args.dtype)
    if cal is not None:
        # A whole phase mostly reads (weights, KV cache): the read roof is its bandwidth.
        roof = Roof(cal.matmul_burst_flops, cal.read_bytes_per_s, cal.launch_s, cal.source)
    prediction = predict(
        model,
        roof,
        prompt_tokens=args.prompt_tokens,
        context=args.context,
        batch=args.batch,
        generate=args.generate,
        dtype=args.dtype,
        causal=not args.no_causal,
    )
    data = prediction_dict(prediction, gpu, roof)
    need = data["weights_bytes"] + data["kv_cache_bytes"]
    data["memory_bytes_needed"] = need
    data["fits_in_memory"] = need <= gpu.memory_gb * 1e9
    if not data["fits_in_memory"]:
        warning = (
            f"{model.name} needs {need / 1e9:.0f} GB (weights and KV cache) but {gpu.name} has "
            f"{gpu.memory_gb:.0f} GB: these times are for a GPU that could hold it"
        )
        data["warning"] = warning
        if args.json:  # stdout holds the JSON object alone
            print(f"warning: {warning}", file=sys.stderr)
        else:
            console.print(f"[yellow]warning: {warning}[/]")
    if cal is not None:
        data["tiers"] = phase_tiers(prediction, cal, Roof.from_spec(gpu, args.dtype))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render(data, console)
        if cal is not None:
            render_tiers(data["tiers"], console)
    return 0


def phase_tiers(prediction: InferencePrediction, cal, datasheet: Roof) -> dict:
    """Each phase as one kernel of its cost on the calibrated tiers (graph-replayed: a serving
    step is captured); launches and per-kernel fixed costs of a real step are not in it."""
    from roofbench.theory import tiers

    out = {}
    for name, phase in (("prefill", prediction.prefill), ("decode", prediction.decode)):
        cost = OpCost(phase.flops, phase.bytes_)
        out[name] = tiers.predict(tiers.Work(cost), cal, datasheet, "graph").tiers
    return out


def render_tiers(data: dict, console: Console) -> None:
    from roofbench.theory.tiers import TIERS

    table = Table(title="tiers (one kernel per phase, calibrated)")
    table.add_column("phase")
    for tier in TIERS:
        table.add_column(tier, justify="right")
    for phase, by_tier in data.items():
        table.add_row(phase, *(_seconds(by_tier[t]) for t in TIERS))
    console.print(table)
