"""Scenario 3: Redis killed -9 (appendonly, fsync every second): the app stays up on the
database, and the cache/session data lost in the crash is measured with a write ledger and
judged against the stack file's RPO objective."""

import time

import pytest
from stackcheck.fixtures.chaos import assert_passed

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult, http_probe
from stackcheck.chaos.workloads import RedisLedger
from stackcheck.stack import Stack

pytestmark = pytest.mark.chaos


def redis_kill(stack: Stack, exp: Experiment) -> ExperimentResult:
    keys = RedisLedger(stack, stack.run_id + str(time.time_ns()))
    exp.steady_state("api answers", lambda: None if http_probe(stack, "/api/prompt-cards")(2.0) else "api down")
    with exp.rto(http_probe(stack, "/api/prompt-cards")), exp.ledger(keys.write, interval_s=0.01) as ledger:
        time.sleep(2.0)
        # Writes go on through the crash: those refused while Redis is down are simply not acknowledged.
        with faults.kill(stack.service("redis"), exp.journal):
            time.sleep(1.0)
        time.sleep(0.5)
    report = exp.reconcile(keys.surviving())
    exp.observe(f"Redis data: {report.describe()}")
    exp.observe(f"{ledger.attempted - report.acknowledged} writes refused while Redis was down")
    return exp.finish()


def test_redis_kill(stack, experiment) -> None:
    if "redis" not in stack.spec.services:
        pytest.skip("needs a redis service")
    assert_passed(redis_kill(stack, experiment("redis-kill", stack)))
