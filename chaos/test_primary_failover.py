"""Scenario 2: the PostgreSQL primary killed -9; the replica is promoted with the seed's
procedure and takes over the primary's DNS name, which the app's database link dials. RTO of
writes and RPO (asynchronous replication: acknowledged writes not yet shipped are lost)
measured with a write ledger."""

import time

import pytest
from stackcheck.fixtures.chaos import assert_passed

from stackcheck.chaos import faults, postgres
from stackcheck.chaos.experiment import http_probe
from stackcheck.chaos.workloads import ApiLedger

pytestmark = [pytest.mark.chaos, pytest.mark.slow]  # a fresh stack and a failover: the full gate only
LINK = "backend->postgres-primary"


def test_primary_failover(fresh_stack, experiment) -> None:
    stack = fresh_stack
    if LINK not in stack.spec.links or "postgres-replica" not in stack.spec.services:
        pytest.skip(f"needs a primary, a replica and the {LINK} link")
    exp = experiment("primary-kill", stack)
    ledger_writes = ApiLedger(stack, stack.run_id)
    write_probe = http_probe(
        stack, "/api/prompt-cards", "POST", json={"title": "probe", "prompt": "p", "category": "probe"}
    )
    exp.steady_state("writes succeed", lambda: None if write_probe(2.0) else "POST /api/prompt-cards failed")
    exp.steady_state("replica caught up", lambda: None if postgres.wait_for_catch_up(stack) < 10 else "lagging")
    with exp.ledger(ledger_writes.write, interval_s=0.05) as ledger, exp.rto(write_probe, probe_timeout=1.0) as meter:
        time.sleep(1.0)
        with faults.kill(stack.service("postgres-primary"), exp.journal, restart=False):
            time.sleep(1.0)  # detection time of a watchdog, as in the seed's check loop
            exp.action("promote postgres-replica (pg_ctl promote)", lambda: postgres.promote(stack))
            exp.action(
                "move the name postgres-primary to postgres-replica",
                lambda: postgres.take_over_name(stack, "postgres-primary", "postgres-replica"),
            )
            exp.await_recovery(30.0)
            time.sleep(1.0)
    report = exp.reconcile(ledger_writes.surviving("postgres-replica"))
    exp.observe(f"{ledger.attempted} writes attempted during the experiment")
    exp.observe(report.describe())
    exp.verify(
        "no unacknowledged write duplicated",
        lambda: None if not report.duplicates else f"duplicates {report.duplicates}",
    )
    assert meter.result().first_failure is not None, "killing the primary must interrupt writes"
    assert_passed(exp.finish())
