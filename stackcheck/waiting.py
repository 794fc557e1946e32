"""Polling until something holds, the one way stackcheck waits (like testcontainers' ``_poll``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout_s: float, interval_s: float = 0.25) -> T | None:
    """Call ``check`` until it returns something other than None (returned), at most ``timeout_s``
    seconds; None when time ran out. Polls at least once, however short the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() + interval_s > deadline:
            return None
        time.sleep(interval_s)
