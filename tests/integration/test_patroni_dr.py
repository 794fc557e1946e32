"""The Patroni cluster's disaster-recovery drills (design doc 004 section 7.4), on real containers.

Q2: base backup and a streaming WAL archive in a volume outside the cluster, the cluster destroyed
(etcd and every Patroni member with their data) and rebuilt from the backup to a recovery target
time: every write acknowledged before the target present, none sent after it, within Tier 3. The
meter is checked against a different mechanism: the ids and server-side commit times read
directly from each rebuilt member (superuser, not through PgBouncer). A wrong recovery target must
fail integrity, naming the missing ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stackcheck import resources
from stackcheck.chaos.experiment import Experiment
from stackcheck.chaos.scenarios import load_hook
from stackcheck.chaos.spec import Hook
from stackcheck.stack import Stack

pytestmark = [pytest.mark.docker]

CLUSTER = resources.stacks_dir() / "patroni" / "stack.toml"
Q2 = "q2-rebuild-from-backup"


def _backup(name: str) -> Any:
    return load_hook(Hook(CLUSTER.parent / "backup.py", name))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    with Stack.from_file(CLUSTER) as stack:
        yield stack


def _rows(stack: Stack, member: str) -> tuple[set[int], Any]:
    with stack.postgres(member, superuser=True) as conn:
        rows = conn.execute("SELECT id, extract(epoch FROM at) FROM drill_ledger").fetchall()
    return {r[0] for r in rows}, max((float(r[1]) for r in rows), default=None)


def test_q2_rebuild_from_backup_to_a_target_time_meets_tier_3(cluster: Stack) -> None:
    scenario = cluster.spec.chaos.scenarios[Q2]
    result, judged = _backup("rebuild_drill")(cluster, Experiment(Q2, cluster), scenario.targets)
    print("\n" + result.summary())
    assert result.passed, result.summary()
    assert result.rto is not None
    assert result.rto.rto_s is not None
    assert result.rto.rto_s < 4 * 3600
    assert judged.rpo_s < 3600
    # Writes on both sides of the target, so the check can fail either way.
    assert len(judged.before) > 50
    assert len(judged.after) > 20
    assert not judged.missing
    assert not judged.extra
    # Ground truth from the members themselves: the same ids on every rebuilt member, each row's
    # server-side time before the target, and every write acknowledged before the target there.
    for member in ("patroni-1", "patroni-2", "patroni-3"):
        ids, newest = _rows(cluster, member)
        assert ids == judged.present, f"{member} holds other ids than PgBouncer read"
        assert newest is not None
        assert newest < judged.target
        assert judged.before <= ids
        assert not (judged.after & ids)


def test_q2_with_a_recovery_target_set_too_early_fails_integrity_naming_the_missing_ids(cluster: Stack) -> None:
    scenario = cluster.spec.chaos.scenarios[Q2]
    result, judged = _backup("rebuild_drill")(cluster, Experiment(Q2, cluster), scenario.targets, target_error_s=-1.0)
    print("\n" + result.summary())
    assert not result.passed
    [breach] = [b for b in result.breaches if "before the recovery target is present" in b]
    assert judged.missing, "a target 1 s early must lose writes acknowledged in that second"
    ids, _ = _rows(cluster, "patroni-1")
    # The ids the breach names are exactly those acknowledged before the target and not on the member.
    assert sorted(judged.before - ids) == judged.missing
    assert str(judged.missing[0]) in breach
    assert str(judged.missing[-1]) in breach
    assert f"({len(judged.missing)})" in breach
