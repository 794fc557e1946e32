"""Prompt Card's chaos hooks: the scenario steps that data cannot say ([scenarios.NAME] hook =
"hooks.py:FUNCTION"). Each takes (stack, experiment, scenario) and returns the ExperimentResult;
the probe, ledger, traffic, fault and [verify] checks still come from the stack file."""

from __future__ import annotations

import time

from stackcheck.chaos import postgres
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.journal import EventKind
from stackcheck.chaos.scenarios import ScenarioRun
from stackcheck.chaos.spec import Scenario
from stackcheck.chaos.workloads import Traffic
from stackcheck.errors import StackFileError
from stackcheck.stack import Stack

PRIMARY, REPLICA, NETWORK = "postgres-primary", "postgres-replica", "internal"
CATCH_UP_TIMEOUT_S = 60.0  # after a partition heals; judged against the scenario's rto_s


def _replica_caught_up(stack: Stack, exp: Experiment) -> None:
    exp.steady_state(
        "replica caught up", lambda: None if postgres.wait_for_catch_up(stack, PRIMARY, REPLICA) < 10 else "lagging"
    )


def primary_failover(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """Kill the primary (the scenario's fault, not restarted); after the watchdog's detection time
    (duration_s) promote the replica with the seed's procedure and move the primary's DNS name to
    it, which the app's database link dials; then wait for the writes to recover."""
    run = ScenarioRun(stack, exp, scenario)
    run.steady_state()
    _replica_caught_up(stack, exp)
    timing = scenario.timing
    with run.measuring():
        time.sleep(timing.warmup_s)
        with run.fault():
            time.sleep(timing.duration_s)
            exp.action(f"promote {REPLICA} (pg_ctl promote)", lambda: postgres.promote(stack, REPLICA))
            exp.action(
                f"move the name {PRIMARY} to {REPLICA}",
                lambda: postgres.take_over_name(stack, PRIMARY, REPLICA, NETWORK),
            )
            exp.await_recovery(timing.recovery_timeout_s or 30.0)
            time.sleep(timing.after_s)
    run.reconcile()  # the ledger reads the promoted replica
    run.verify()
    return run.finish()


def replica_partition(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """Cut the replica's replication link (the scenario's fault) while writes go on: the lag must
    grow, reads (the scenario's traffic) stay served or fail clearly ([verify]), and the replica
    must catch up after the heal within the scenario's rto_s."""
    objective = exp.objective.rto_s if exp.objective else None
    if objective is None:
        raise StackFileError(
            f"scenario {scenario.name}: the catch-up time needs an objective",
            f"add rto_s to [objectives.chaos.{scenario.name}]",
        )
    run = ScenarioRun(stack, exp, scenario)
    _replica_caught_up(stack, exp)
    run.steady_state()
    writes = Traffic(stack, run.request("create-card").send, concurrency=1)
    timing = scenario.timing
    with run.measuring(), writes:
        time.sleep(timing.warmup_s)
        with run.fault():
            time.sleep(timing.duration_s)
            lag = postgres.lag_bytes(stack, PRIMARY, REPLICA)
        catch_up = postgres.wait_for_catch_up(stack, PRIMARY, REPLICA, timeout_s=CATCH_UP_TIMEOUT_S)
    start, end = run.window()
    exp.observe(f"replication lag after {timing.duration_s:g} s of partition: {lag} bytes")
    exp.observe(f"writes during the partition: {writes.window(start, end).describe()}")
    exp.observe(f"caught up {catch_up:.2f}s after the partition healed")
    exp.journal.record(EventKind.RECOVERED, "replica caught up", f"{catch_up:.2f}s after heal")
    exp.verify(
        "lag grew during the partition", lambda: None if lag > 0 else "no lag measured: was the link really cut?"
    )
    exp.verify(f"catch-up within {objective:g}s", lambda: None if catch_up <= objective else f"took {catch_up:.1f}s")
    run.verify()
    return run.finish()
