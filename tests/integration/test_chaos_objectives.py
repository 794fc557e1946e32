"""The chaos scenarios' objectives fail on deliberately broken variants:

- redis-kill on a Redis without persistence (appendonly no): the keys acknowledged before the
  crash are gone, and the RPO objective of the stack file fails the experiment.
- db-latency with a recovery that is not complete (latency left on the database link after the
  fault's revert): the "back to normal" check fails, for 50 ms and for 5 ms per round trip
  (about +35 ms at p95: 6-7 round trips).
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from chaos.test_db_latency import db_latency
from chaos.test_redis_kill import redis_kill
from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment
from stackcheck.chaos.journal import Journal
from stackcheck.stack import DEFAULT_STACK, LinkHandle, Stack
from stackcheck.stackfile import parse

pytestmark = [pytest.mark.docker, pytest.mark.chaos, pytest.mark.slow]


def test_redis_kill_fails_its_rpo_objective_without_persistence(tmp_path: Path) -> None:
    data = tomllib.loads(DEFAULT_STACK.read_text())
    data["services"]["redis"]["env"]["REDIS_APPENDONLY"] = "no"
    objective = data["objectives"]["chaos"]["redis-kill"]["rpo_s"]
    # Same directory as the reference file: its template files resolve.
    with Stack(parse(data, DEFAULT_STACK.parent / "stack.toml")) as stack:
        result = redis_kill(stack, Experiment("redis-kill", stack))
    print(f"\n{result.summary()}")
    assert result.rpo is not None
    assert result.rpo.lost, "a Redis without persistence lost nothing in a SIGKILL?"
    assert result.rpo.rpo_s > objective
    assert result.breaches == (
        f"RPO {result.rpo.rpo_s:.3f}s ({result.rpo.rpo_writes} writes) > objective {objective:g}s",
    )


@pytest.mark.parametrize("residual_ms", [50, 5])
def test_db_latency_fails_when_latency_is_left_on_the_link(stack: Stack, residual_ms: int) -> None:
    with contextlib.ExitStack() as cleanup:

        @contextlib.contextmanager
        def leaves_residue(link: LinkHandle, ms: int, journal: Journal) -> Iterator[None]:
            with faults.latency(link, ms, journal=journal):
                yield
            cleanup.enter_context(faults.latency(link, residual_ms))  # removed only after the experiment

        def inject(link: LinkHandle, ms: int, journal: Journal) -> AbstractContextManager[None]:
            return leaves_residue(link, ms, journal)

        result = db_latency(stack, Experiment("db-latency", stack), inject)
    print(f"\n{result.summary()}")
    [breach] = result.breaches
    assert breach.startswith("median back to normal after the fault"), result.breaches
    assert stack.toxiproxy.get("backend->postgres-primary").toxics == ()
