"""Scenario 6: the replica cut off from the primary: replication lag grows while writes go on,
reads stay served (or fail clearly), and the replica catches up after the partition heals."""

import time

import pytest
from stackcheck.fixtures.chaos import assert_passed

from stackcheck.chaos import faults, postgres
from stackcheck.chaos.workloads import Traffic, create_card, list_cards

pytestmark = pytest.mark.chaos
LINK = "postgres-replica->postgres-primary"


def test_replica_partition(stack, experiment) -> None:
    if LINK not in stack.spec.links:
        pytest.skip(f"needs the {LINK} link")
    exp = experiment("replica-partition", stack)
    exp.steady_state("replica caught up", lambda: None if postgres.wait_for_catch_up(stack) < 10 else "lagging")
    with Traffic(stack, create_card, concurrency=1) as writes, Traffic(stack, list_cards, concurrency=1) as reads:
        time.sleep(1.0)
        with faults.link_down(stack.link(LINK), exp.journal):
            time.sleep(5.0)
            lag = postgres.lag_bytes(stack)
        catch_up = postgres.wait_for_catch_up(stack, timeout_s=60.0)
    start, end = exp.window(f"link down {LINK}")
    exp.observe(f"replication lag after 5 s of partition: {lag} bytes")
    exp.observe(f"writes during the partition: {writes.window(start, end).describe()}")
    exp.observe(f"reads during the partition: {reads.window(start, end).describe()}")
    exp.observe(f"caught up {catch_up:.2f}s after the partition healed")
    exp.journal.record(
        exp.journal.events[0].kind.__class__.RECOVERED, "replica caught up", f"{catch_up:.2f}s after heal"
    )
    read_failures = {s: n for s, n in reads.window(start, end).statuses.items() if s not in (200, 503)}
    exp.verify(
        "lag grew during the partition", lambda: None if lag > 0 else "no lag measured: was the link really cut?"
    )
    exp.verify(
        "reads served or failing clearly",
        lambda: None if not read_failures else f"unexpected read answers {read_failures}",
    )
    objective = exp.objective.rto_s if exp.objective and exp.objective.rto_s else 30.0
    exp.verify(f"catch-up within {objective:g}s", lambda: None if catch_up <= objective else f"took {catch_up:.1f}s")
    exp.traffic = reads.errors_per_second()
    assert_passed(exp.finish())
