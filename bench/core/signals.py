"""SIGINT and SIGTERM during a measuring run: raised as `Interrupted` so that what was
measured is kept and the report written, and remembered so that a signal swallowed inside a
case still stops the run (`interruptible`, `StopFlag`)."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """SIGINT or SIGTERM arrived; `code` is the shell's exit code for it (130 or 143). A
    BaseException, as KeyboardInterrupt is: a handler that keeps a sweep going past one broken
    case (`except Exception`) must not swallow it and measure on."""

    def __init__(self, signum: int):
        self.signum, self.code = signum, 128 + signum
        super().__init__(signal.Signals(signum).name)


class StopFlag:
    """The signal `interruptible` caught, if any; `check` raises Interrupted once it has."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def interruptible():
    """SIGINT and SIGTERM raise Interrupted inside the block (so the rows written are kept and
    the summary written), and are remembered in the StopFlag it yields; the previous handlers
    come back after it.

    The exception lands at whatever line runs when the signal arrives, and a library may turn
    it into an error of its own there (a CPU test saw the case then recorded as "raised
    AttributeError"), which the case's own error handling records and moves past. So a loop
    calls `check()` after each case: a signal that was swallowed still stops it there, and the
    case it cut is not written."""
    flag = StopFlag()

    def handler(signum, frame):
        flag.signum = signum
        raise Interrupted(signum)

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        for sig in old:
            signal.signal(sig, handler)
    try:
        yield flag
    finally:
        if installed:
            for sig, previous in old.items():
                signal.signal(sig, previous)
