"""Argument types of the `roofbench` command line: each refuses a bad value in one line."""

from __future__ import annotations

import argparse


def one_line(text: str) -> str:
    """`text` with every unprintable character (a newline in an argument, say) escaped, so an
    error stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


# Sizes beyond this are not a shape any GPU runs (a 2^40-token prompt, a 2^40 batch): refused
# before any arithmetic, so a 400-digit number is a one-line error, not a long computation.
MAX_SIZE = 2**40


def positive_int(text: str) -> int:
    if len(text.strip()) > 20:
        raise argparse.ArgumentTypeError(f"{text[:20]}... is too large (at most {MAX_SIZE})")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {MAX_SIZE})")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def names_of(known: tuple[str, ...]):
    """A comma-separated subset of `known`, refused with the known names otherwise."""

    def parse(text: str) -> tuple[str, ...]:
        return pick(text, known, "")

    return parse


def pick(text: str, known: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """The comma-separated names of `text`, each one of `known`."""
    picked = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    wrong = [p for p in picked if p not in known]
    if wrong or not picked:
        prefix = f"{flag}: " if flag else ""
        message = f"{prefix}unknown {', '.join(wrong) or 'empty list'} (known: {', '.join(known)})"
        if flag:
            raise ValueError(message)
        raise argparse.ArgumentTypeError(message)
    return picked
