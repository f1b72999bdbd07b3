"""`roofbench` as a user runs it, for the tests of the command line: a process of its own, so the
tests' Triton interpreter setting and imports stay out of it (on the path through pytest's
`pythonpath`)."""

import subprocess
import sys


def roofbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`roofbench ARGS...` run to its end: exit code, stdout and stderr as text."""
    command = [sys.executable, "-m", "roofbench.bench.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
