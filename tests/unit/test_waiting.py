"""wait_until: the one polling helper."""

from __future__ import annotations

import time

from stackcheck.waiting import wait_until


def test_returns_the_first_value_that_is_not_none() -> None:
    answers = iter([None, None, "ready"])
    assert wait_until(lambda: next(answers), timeout_s=5, interval_s=0.01) == "ready"


def test_gives_up_after_the_timeout_and_polls_at_least_once() -> None:
    calls = []
    started = time.monotonic()
    assert wait_until(lambda: calls.append(1), timeout_s=0.1, interval_s=0.02) is None
    assert 0.05 <= time.monotonic() - started < 1.0
    assert len(calls) >= 3
    calls.clear()
    assert wait_until(lambda: calls.append(1), timeout_s=0, interval_s=1) is None
    assert calls == [1]


def test_falsy_values_other_than_none_count_as_done() -> None:
    assert wait_until(lambda: 0, timeout_s=1) == 0
