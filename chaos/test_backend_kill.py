"""Scenario 1: one backend replica killed -9 under load; nginx routes around it."""

import time

import pytest
from stackcheck.fixtures.chaos import assert_passed

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import http_probe
from stackcheck.chaos.workloads import Traffic, list_cards

pytestmark = pytest.mark.chaos


def test_backend_kill(stack, experiment) -> None:
    backends = stack.instances("backend")
    if len(backends) < 2:
        pytest.skip("needs at least 2 backend replicas")
    exp = experiment("backend-kill", stack)
    exp.steady_state(
        "api answers", lambda: None if http_probe(stack, "/api/prompt-cards")(2.0) else "GET /api/prompt-cards failed"
    )
    with Traffic(stack, list_cards) as traffic, exp.rto(http_probe(stack, "/api/prompt-cards")) as meter:
        time.sleep(1.0)
        with faults.kill(backends[0], exp.journal):
            time.sleep(3.0)
        time.sleep(1.0)
    window = exp.window(f"SIGKILL {backends[0].name}")
    exp.observe(f"traffic during the kill: {traffic.window(*window).describe()}")
    exp.verify("every replica healthy again", lambda: faults.not_healthy(backends))
    assert meter.result().total_probes > 50
    exp.traffic = traffic.errors_per_second()
    assert_passed(exp.finish())
