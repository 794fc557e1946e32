"""Scenario 4: +200 ms on the database link while under load: the p95 impact on a
database-bound endpoint, measured before, during and after the fault."""

import time

import pytest

from fixtures.chaos import assert_passed
from stackcheck.chaos import faults
from stackcheck.chaos.workloads import Traffic, create_card

pytestmark = pytest.mark.chaos
LINK = "backend->postgres-primary"
ADDED_MS = 200


def test_db_latency(stack, experiment) -> None:
    if LINK not in stack.spec.links:
        pytest.skip(f"needs the {LINK} link")
    exp = experiment("db-latency", stack)
    with Traffic(stack, create_card, concurrency=2) as traffic:
        time.sleep(4.0)
        with faults.latency(stack.link(LINK), ADDED_MS, journal=exp.journal):
            time.sleep(6.0)
        time.sleep(4.0)
    start, end = exp.window(f"latency on {LINK} (downstream)")
    before, during, after = traffic.window(0, start), traffic.window(start + 1.0, end), traffic.window(end + 1.0)
    for name, window in (("before", before), ("during", during), ("after", after)):
        exp.observe(f"POST /api/prompt-cards {name}: {window.describe()}")
    assert before.p95_ms is not None
    assert during.p95_ms is not None
    assert after.p95_ms is not None
    exp.observe(f"p95 impact of +{ADDED_MS} ms on {LINK}: {during.p95_ms - before.p95_ms:+.0f} ms")
    exp.verify(
        "every write succeeded", lambda: None if set(during.statuses) == {201} else f"statuses {during.statuses}"
    )
    exp.verify(
        "the added latency shows in p95",
        lambda: None if during.p95_ms - before.p95_ms >= ADDED_MS * 0.9 else "no impact measured",
    )
    exp.verify(
        "p95 back to normal after the fault",
        lambda: None if after.p95_ms <= before.p95_ms * 2 + 20 else f"p95 still {after.p95_ms:.0f} ms",
    )
    exp.traffic = traffic.errors_per_second()
    assert_passed(exp.finish())
