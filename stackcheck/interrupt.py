"""SIGTERM and SIGHUP end a stackcheck process the way Ctrl-C does: as an exception, so every
``with Stack(...)``, fault and load run unwinds and removes what it started right away (the
reaper would only do it tens of seconds later, and a kept ``stackcheck up`` stack has none).

Also a pytest plugin (``-p stackcheck.interrupt``): the gate's pytest child tears its session
stack down when the gate forwards a signal to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
CHILD_GRACE_S = 60.0  # a child tearing its stack down: containers, networks, Locust processes


class Terminated(KeyboardInterrupt):
    """The process was told to stop by ``signum``; a KeyboardInterrupt so pytest unwinds the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not cut the teardown the first one started short.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def raise_on_termination() -> None:
    """Make SIGTERM and SIGHUP raise ``Terminated`` in the main thread."""
    for sig in SIGNALS:
        signal.signal(sig, _raise)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process ended by it (130 for Ctrl-C)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def run_child(args: Sequence[str], cwd: Path) -> int:
    """Run a child (pytest) in a process group of its own and return its exit code. When this
    process is interrupted, the child's group gets SIGTERM and is waited for, so it removes its
    stack before this process goes on unwinding; SIGKILL only if it does not end in time."""
    proc = subprocess.Popen(list(args), cwd=cwd, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        for sig, grace in ((signal.SIGTERM, CHILD_GRACE_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
                break
        raise


def pytest_configure(config: Any) -> None:
    raise_on_termination()
