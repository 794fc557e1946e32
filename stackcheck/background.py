"""One round of work every ``interval_s`` in a daemon thread while a ``with`` block runs.

The pollers and workloads of drills and tests (a role poller, a write ledger, a leftover watch)
subclass ``BackgroundLoop`` and write only ``tick`` (and ``finish`` when a round holds a
resource). An exception from ``tick`` ends the loop and is raised again by ``stop`` (and so on
leaving the block), instead of dying silently with the thread and leaving the caller to judge
from missing samples.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self


class BackgroundLoop:
    """Subclasses set ``interval_s`` and implement ``tick``; ``tick`` runs at once, then every
    ``interval_s`` from the start of the previous round (at once again when a round took longer).

    No ``__init__``: dataclass subclasses keep theirs; the loop's state is made by ``start``."""

    interval_s: float = 0.2
    _loop_thread: threading.Thread | None = None
    _loop_stop: threading.Event | None = None
    _loop_error: BaseException | None = None

    def tick(self) -> None:
        """One round (a sample, a write, a poll)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Runs in the loop's thread after its last round: close what ``tick`` opened."""

    @property
    def loop_name(self) -> str:
        return type(self).__name__

    @property
    def running(self) -> bool:
        return self._loop_thread is not None and self._loop_thread.is_alive()

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.loop_name} is already running")
        self._loop_stop, self._loop_error = threading.Event(), None
        self._loop_thread = threading.Thread(
            target=self._run, args=(self._loop_stop,), name=self.loop_name, daemon=True
        )
        self._loop_thread.start()

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                began = time.monotonic()
                self.tick()
                stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))
        except BaseException as exc:  # handed to the caller by stop(): a thread's exception is lost otherwise
            self._loop_error = exc
        finally:
            self.finish()

    def stop(self, reraise: bool = True) -> None:
        """Stop after the current round, wait for the thread, and raise what ended the loop, if anything."""
        if self._loop_stop is not None:
            self._loop_stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join()
        error, self._loop_error = self._loop_error, None
        if error is not None and reraise:
            raise error

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # An error in the block wins: the loop's own error would hide it.
        self.stop(reraise=exc_type is None)
