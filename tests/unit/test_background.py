"""BackgroundLoop: rounds on schedule in a thread, stopped and joined on leaving the block, and an
exception from a round raised in the caller (not lost with the thread)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from stackcheck.background import BackgroundLoop
from stackcheck.chaos.meters import WriteLedger


@dataclass
class Counter(BackgroundLoop):
    interval_s: float = 0.01
    fail_at: int | None = None
    ticks: list[float] = field(default_factory=list)
    finished_in: list[str] = field(default_factory=list)
    round_s: float = 0.0

    def tick(self) -> None:
        self.ticks.append(time.monotonic())
        if self.fail_at is not None and len(self.ticks) == self.fail_at:
            raise ValueError(f"round {self.fail_at} failed")
        time.sleep(self.round_s)

    def finish(self) -> None:
        self.finished_in.append(threading.current_thread().name)


def test_rounds_run_until_the_block_ends_then_finish_runs_in_the_loop_thread() -> None:
    with Counter() as loop:
        assert loop.running
        time.sleep(0.2)
    assert not loop.running
    n = len(loop.ticks)
    assert 5 <= n <= 25, n  # every 10 ms for 200 ms, with slack for a loaded machine
    time.sleep(0.05)
    assert len(loop.ticks) == n  # joined: no round after the block
    assert loop.finished_in == ["Counter"]


def test_the_interval_is_counted_from_the_start_of_a_round() -> None:
    """A round of 30 ms on a 50 ms schedule: rounds start 50 ms apart, not 80 ms."""
    with Counter(interval_s=0.05, round_s=0.03) as loop:
        time.sleep(0.42)
    gaps = [b - a for a, b in zip(loop.ticks, loop.ticks[1:], strict=False)]
    assert len(gaps) >= 5
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, abs=0.015)


def test_an_exception_in_a_round_ends_the_loop_and_is_raised_on_leaving_the_block() -> None:
    loop = Counter(fail_at=3)
    with pytest.raises(ValueError, match="round 3 failed"), loop:
        time.sleep(0.2)
    assert len(loop.ticks) == 3  # the loop stopped at the failing round
    assert loop.finished_in == ["Counter"]  # and still cleaned up


def test_an_error_in_the_block_is_not_hidden_by_the_loops_error() -> None:
    loop = Counter(fail_at=1)

    def block() -> None:
        with loop:
            time.sleep(0.05)
            raise KeyError("the block's")

    with pytest.raises(KeyError, match="the block's"):
        block()
    loop.stop()  # the loop's error was dropped, not kept for later: stopping again raises nothing


def test_stop_raises_once_and_the_loop_restarts_clean() -> None:
    loop = Counter(fail_at=1)
    loop.start()
    time.sleep(0.05)
    with pytest.raises(ValueError, match="round 1 failed"):
        loop.stop()
    loop.stop()
    loop.fail_at = None
    with loop:
        time.sleep(0.05)
    assert len(loop.ticks) > 1


def test_starting_a_running_loop_is_refused() -> None:
    with Counter() as loop, pytest.raises(RuntimeError, match="Counter is already running"):
        loop.start()


def test_the_write_ledger_writes_in_the_background_and_reports_a_failing_writer_as_unacknowledged() -> None:
    def writer(n: int) -> None:
        if n % 2 == 0:
            raise OSError("refused")

    with WriteLedger(writer, interval_s=0.01) as ledger:
        time.sleep(0.15)
    assert ledger.attempted >= 5
    assert set(ledger.acks) == set(range(1, ledger.attempted + 1, 2))  # a failed write is not an error of the loop
