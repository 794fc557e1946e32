"""The chaos scenarios of the stack file fail on deliberately broken variants, through the same
generic runner the chaos suite uses:

- redis-kill on a Redis without persistence (appendonly no): the keys acknowledged before the
  crash are gone, and the RPO objective of the stack file fails the experiment.
- redis-kill whose ledger read-back misses writes (a key pattern that finds one key in ten): the
  writes it cannot find count as lost, and the RPO objective fails.
- db-reset-peer with an RTO objective below the outage it causes: the RTO breach names both.
- db-latency with a recovery that is not complete (latency left on the database link after the
  fault's revert): the "back to normal" check fails, for 50 ms and for 5 ms per round trip
  (about +35 ms at p95: 6-7 round trips).
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.scenarios import ScenarioRun, run_scenario
from stackcheck.stack import DEFAULT_STACK, Stack
from stackcheck.stackfile import StackSpec, parse

pytestmark = [
    pytest.mark.docker,
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.exclusive("judges measured recovery against objectives"),
]


def variant(change: Callable[[dict[str, Any]], None]) -> StackSpec:
    """The reference stack file, changed; parsed next to the real one (its hooks and templates resolve)."""
    data = tomllib.loads(DEFAULT_STACK.read_text())
    change(data)
    return parse(data, DEFAULT_STACK)


def run(stack: Stack, name: str) -> ExperimentResult:
    result = run_scenario(stack, Experiment(name, stack), stack.spec.chaos.scenarios[name])
    print(f"\n{result.summary()}")
    return result


def test_redis_kill_fails_its_rpo_objective_without_persistence() -> None:
    def no_persistence(data: dict[str, Any]) -> None:
        data["services"]["redis"]["env"]["REDIS_APPENDONLY"] = "no"

    spec = variant(no_persistence)
    objective = spec.objectives.chaos["redis-kill"].rpo_s
    assert objective is not None
    with Stack(spec) as stack:
        result = run(stack, "redis-kill")
    assert result.rpo is not None
    assert result.rpo.lost, "a Redis without persistence lost nothing in a SIGKILL?"
    assert result.rpo.rpo_s > objective
    assert result.breaches == (
        f"RPO {result.rpo.rpo_s:.3f}s ({result.rpo.rpo_writes} writes) > objective {objective:g}s",
    )


def test_a_ledger_read_back_that_misses_writes_fails_the_rpo_objective(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def finds_one_in_ten(data: dict[str, Any]) -> None:
        data["ledgers"]["sessions"]["read"]["redis_keys"] = "ledger:${run}-*0"

    monkeypatch.setattr(stack, "spec", variant(finds_one_in_ten))  # same services: the session stack's containers
    result = run(stack, "redis-kill")
    assert result.rpo is not None
    missed = [n for n in range(1, result.rpo.acknowledged + 1) if n % 10]
    assert set(missed) <= set(result.rpo.lost), "every write not ending in 0 is missing from the read-back"
    [breach] = result.breaches
    assert breach.startswith(f"RPO {result.rpo.rpo_s:.3f}s ("), breach
    assert breach.endswith("> objective 1s"), breach


def test_an_rto_objective_below_the_outage_fails_the_scenario(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    def tight(data: dict[str, Any]) -> None:
        data["objectives"]["chaos"]["db-reset-peer"]["rto_s"] = 0.5  # the fault alone lasts 3 s

    monkeypatch.setattr(stack, "spec", variant(tight))
    result = run(stack, "db-reset-peer")
    assert result.rto is not None
    assert result.rto.rto_s is not None
    assert result.rto.rto_s > 2.5, result.rto.describe()
    assert result.breaches == (f"RTO {result.rto.rto_s:.3f}s > objective 0.5s",)


@pytest.mark.parametrize("residual_ms", [50, 5])
def test_db_latency_fails_when_latency_is_left_on_the_link(stack: Stack, residual_ms: int) -> None:
    link = stack.link("backend->postgres-primary")
    with contextlib.ExitStack() as cleanup:

        class LeavesResidue(ScenarioRun):
            """The scenario's own fault, then latency left behind until after the experiment."""

            @contextlib.contextmanager
            def fault(self) -> Iterator[None]:
                with super().fault():
                    yield
                cleanup.enter_context(faults.latency(link, residual_ms))

        scenario = stack.spec.chaos.scenarios["db-latency"]
        result = LeavesResidue(stack, Experiment("db-latency", stack), scenario).run()
    print(f"\n{result.summary()}")
    [breach] = result.breaches
    assert breach.startswith("median back to normal after the fault"), result.breaches
    assert stack.toxiproxy.get("backend->postgres-primary").toxics == ()
