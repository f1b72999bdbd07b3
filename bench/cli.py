"""The `roofbench` command: one sub-command per job, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from roofbench.theory.hardware import GPUS
from roofbench.theory.ops import DTYPE_BYTES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict FLOPs, bytes, bound, TTFT, TBT and throughput of a model on a GPU",
        description="Roofline predictions of prefill and decode for one model and request shape.",
    )
    p.add_argument("--model", default="llama3-8b", help="built-in name or a config.json path")
    p.add_argument(
        "--gpu",
        metavar="SLUG",
        help=f"one of {', '.join(GPUS)} or an NVML name (default: the GPU NVML finds here, "
        "else h100-sxm)",
    )
    p.add_argument("--prompt-tokens", type=positive_int, default=1024, metavar="N")
    p.add_argument("--context", type=positive_int, metavar="N", help="default: the prompt length")
    p.add_argument("--batch", type=positive_int, default=1, metavar="B")
    p.add_argument("--generate", type=positive_int, default=128, metavar="G")
    p.add_argument("--dtype", default="bf16", choices=[d for d in DTYPE_BYTES if d != "tf32"])
    p.add_argument(
        "--no-causal", action="store_true", help="count the full N^2 attention, not the causal part"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="roofbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_predict(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "predict":
            from roofbench.bench.predict import run_predict

            return run_predict(args, console)
    except (ValueError, KeyError) as err:
        message = err.args[0] if err.args else str(err)
        print(f"roofbench {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
