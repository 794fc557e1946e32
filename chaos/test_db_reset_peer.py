"""Scenario 5: reset_peer on the database link: writes fail as clean 503s (never a 500 storm),
and succeed again once the fault is cleared."""

import time

import pytest
from stackcheck.fixtures.chaos import assert_passed

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import http_probe
from stackcheck.chaos.workloads import Traffic, create_card

pytestmark = pytest.mark.chaos
LINK = "backend->postgres-primary"


def test_db_reset_peer(stack, experiment) -> None:
    if LINK not in stack.spec.links:
        pytest.skip(f"needs the {LINK} link")
    exp = experiment("db-reset-peer", stack)
    probe = http_probe(stack, "/api/prompt-cards", "POST", json={"title": "probe", "prompt": "p", "category": "probe"})
    exp.steady_state("writes succeed", lambda: None if probe(2.0) else "POST failed")
    with Traffic(stack, create_card, concurrency=2) as traffic, exp.rto(probe, probe_timeout=2.0):
        time.sleep(1.0)
        with faults.reset_peer(stack.link(LINK), journal=exp.journal):
            time.sleep(3.0)
        exp.await_recovery(20.0)
    start, end = exp.window(f"reset_peer on {LINK} (downstream)")
    during = traffic.window(start, end)
    exp.observe(f"writes during the fault: {during.describe()}")
    server_errors = {s: n for s, n in during.statuses.items() if s >= 500 and s != 503}
    exp.verify("failures are clean 503s", lambda: None if not server_errors else f"other 5xx: {server_errors}")
    exp.verify("the fault was felt", lambda: None if during.statuses.get(503) else "no 503 during the fault")
    exp.traffic = traffic.errors_per_second()
    assert_passed(exp.finish())
