"""Q2 of the quarterly drills (design doc 004 section 7.4): rebuild the cluster from a backup to a
point in time (PITR), judged with a write ledger.

The backup is pg_basebackup plus a streaming WAL archive (pg_receivewal), both run by a backup
container of the patroni image on the cluster's data network, writing to a Docker volume of this
run. Why not pgBackRest (in Debian, not in the patroni image): its repository must be reachable from
every member (SSH or its TLS server) and it archives through archive_command, which ships whole
16 MB segments; pg_receivewal streams every commit as it is flushed (RPO of seconds, not
archive_timeout), needs nothing in the members' image or config but a replication slot (a Patroni
permanent slot, so Patroni keeps it on whichever member leads), and the archive lives outside the
cluster's containers: destroying every member leaves the volume and the backup container.

Rebuild: every target of the scenario (etcd and Patroni members) is removed with its data; etcd
starts empty; the first Patroni member starts with Patroni's custom bootstrap (``bootstrap.method:
restore``): restore.sh copies the base backup into the empty data directory and Patroni recovers
with ``restore_command`` from the archive to ``recovery_target_time`` and promotes; the other
members clone it as new replicas. RTO runs from the destroy to the first successful write through
PgBouncer on the rebuilt cluster; the ledger proves integrity: every write acknowledged before the
recovery target is present, none sent after it.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from stackcheck import engine
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.journal import EventKind
from stackcheck.chaos.meters import _ranges
from stackcheck.chaos.scenarios import load_hook
from stackcheck.chaos.spec import Hook, Scenario
from stackcheck.errors import StackError
from stackcheck.stack import SERVICE_LABEL, Stack
from stackcheck.stackfile import FileSpec, ServiceSpec

HERE = Path(__file__).resolve().parent


def _hooks(name: str) -> Any:
    """A name of hooks.py (the Q1 drill's cluster client), from the module the chaos runner loaded."""
    return load_hook(Hook(HERE / "hooks.py", name))


Cluster, Writes, wait_until, prepare = (_hooks(n) for n in ("Cluster", "Writes", "wait_until", "prepare"))
SETTLE_TIMEOUT_S = sys.modules[wait_until.__module__].SETTLE_TIMEOUT_S

SCENARIO = "q2-rebuild-from-backup"
SLOT = "wal_archive"  # the archive's replication slot, a Patroni permanent slot
ARCHIVE = "/var/lib/postgresql/data"  # in the backup container: the image's postgres-owned directory,
# so Docker gives the new volume its owner (uid 999) and mode 0700
RESTORE = "/backup"  # the volume in the restored member, read-only
DATA_NETWORK = "data"
WRITES_S = 1.5  # ledger writes before the backup, between it and the target, and after the target
REBUILD_TIMEOUT_S = 240.0
RESTORE_SCRIPT = """#!/bin/bash
# Patroni's custom bootstrap (bootstrap.method: restore): the base backup into the empty data
# directory; Patroni then recovers from the WAL archive to the target and promotes.
set -euo pipefail
datadir=""
for arg in "$@"; do case "$arg" in --datadir=*) datadir="${arg#--datadir=}" ;; esac; done
[[ -n "$datadir" ]] || { echo "restore.sh: no --datadir argument" >&2; exit 1; }
cp -a /backup/base/. "$datadir"/
chmod 700 "$datadir"
"""


@dataclass(frozen=True)
class Integrity:
    """The ledger against the rebuilt cluster: the recovery target splits the writes in three."""

    target: float  # the recovery target meant (wall clock, UTC)
    before: frozenset[int]  # acknowledged before the target: must be present
    after: frozenset[int]  # sent after the target: must be absent
    present: frozenset[int]  # read on the rebuilt cluster
    last_ack_wall: float  # the last acknowledged write before the destroy

    @property
    def missing(self) -> list[int]:
        return sorted(self.before - self.present)

    @property
    def extra(self) -> list[int]:
        return sorted(self.after & self.present)

    @property
    def rpo_s(self) -> float:
        """What PITR to the target gives up: the target to the last acknowledged write."""
        return max(0.0, self.last_ack_wall - self.target)


class Ledger:
    """Numbered writes through PgBouncer with the wall time each was sent and acknowledged."""

    def __init__(self, writes: Any) -> None:
        self.writes = writes
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}

    def write(self, number: int) -> None:
        self.sent[number] = time.time()
        self.writes.ledger(number)
        self.acked[number] = time.time()

    def judge(self, target: float, present: set[int]) -> Integrity:
        return Integrity(
            target,
            frozenset(n for n, t in self.acked.items() if t < target),
            frozenset(n for n, t in self.sent.items() if t > target),
            frozenset(present),
            max(self.acked.values(), default=target),
        )


def utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(sep=" ", timespec="microseconds")


# -- the backup repository (outside the cluster's containers) -------------------------------------


@contextlib.contextmanager
def backup_volume(stack: Stack) -> Iterator[str]:
    """A Docker volume of this run for the base backup and the WAL archive, removed on exit; while
    a member restored from it still mounts it, with the run (Stack.stop, `stackcheck down`, the reaper)."""
    client = engine.client()
    try:
        name = f"{stack.run_id}-pg-backup-{uuid.uuid4().hex[:6]}"
        volume = client.volumes.create(name, labels=stack.labels(**{SERVICE_LABEL: "pg-backup"}))
        try:
            yield name
        finally:
            try:
                volume.remove(force=True)
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # 409: in use by the restored member
                    raise
    finally:
        client.close()


@contextlib.contextmanager
def archive_slot(cluster: Any) -> Iterator[None]:
    """The archive's slot as a Patroni permanent slot (Patroni drops slots it does not know), on
    the leader before the archiver starts; dropped from the DCS on exit."""
    leader = cluster.leader()
    response = cluster.rest(leader, "PATCH", "/config", {"slots": {SLOT: {"type": "physical"}}})
    if response.status_code != 200:
        raise StackError(f"PATCH /config slots answered {response.status_code}: {response.text[:200]}",
                         "check the REST API credentials")  # fmt: skip
    try:
        wait_until(f"slot {SLOT} on {leader}", lambda: _slot_problem(cluster.stack, leader), 30.0)
        yield
    finally:
        # After a rebuild the DCS is new and has no such slot: nothing to drop then.
        with contextlib.suppress(Exception):
            cluster.rest(str(cluster.leader()), "PATCH", "/config", {"slots": {SLOT: None}})


def _slot_problem(stack: Stack, member: str, active: bool = False) -> str | None:
    with stack.postgres(member, superuser=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()
    if row is None:
        return "no slot yet"
    return "the archiver is not streaming yet" if active and not row[0] else None


@contextlib.contextmanager
def archiver(stack: Stack, volume: str, leader: str) -> Iterator[docker.models.containers.Container]:
    """The backup container: pg_receivewal streaming the leader's WAL into the volume (it ends when
    the cluster goes away: --no-loop); pg_basebackup runs in it too. Removed on exit."""
    env = {k: stack.render(v) for k, v in stack.service(leader).service.env.items()}
    conninfo = f"host={leader} port=5432 user={env.get('POSTGRES_REPLICATION_USER', 'replicator')}"
    client = engine.client()
    try:
        container = client.containers.run(
            stack.service(leader).docker.attrs["Config"]["Image"],
            name=volume,  # one backup container per backup volume
            entrypoint=[
                "bash",
                "-c",
                f"mkdir -p {ARCHIVE}/wal && exec pg_receivewal -D {ARCHIVE}/wal --slot={SLOT} "
                f'--synchronous --no-loop --verbose -d "$0"',
                conninfo,
            ],
            environment={
                "PGPASSWORD": env["POSTGRES_REPLICATION_PASSWORD"],
                "PGSSLMODE": "verify-full",
                "PGSSLROOTCERT": "/run/tls/ca.pem",
            },
            volumes={
                volume: {"bind": ARCHIVE, "mode": "rw"},
                str(stack.tls_files["ca"]): {"bind": "/run/tls/ca.pem", "mode": "ro"},
            },
            network=stack.network_name(DATA_NETWORK),
            labels=stack.labels(**{SERVICE_LABEL: "pg-backup"}),
            healthcheck={"test": ["NONE"]},  # the image's check asks Patroni, which does not run here
            read_only=True,
            cap_drop=["ALL"],
            mem_limit="128m",
            detach=True,
        )
        try:
            yield container
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    finally:
        client.close()


def base_backup(container: Any, leader: str, user: str) -> str:
    """pg_basebackup of the leader into the volume (plain format, its WAL streamed alongside)."""
    code, output = container.exec_run(
        ["pg_basebackup", "-h", leader, "-U", user, "-D", f"{ARCHIVE}/base", "-X", "stream", "-c", "fast",
         "--label", "stackcheck-q2", "--no-password"]
    )  # fmt: skip
    if code != 0:
        raise StackError(f"pg_basebackup of {leader} failed ({code}): {output.decode(errors='replace')[-400:]}",
                         "read the leader's log")  # fmt: skip
    return output.decode(errors="replace").strip()


# -- destroy and rebuild ----------------------------------------------------------------------------


def _not_primary(cluster: Any, member: str) -> str | None:
    """None once ``member``'s REST API says it leads (the other members may not exist yet)."""
    handle = cluster.stack.service(member)
    handle.docker.reload()
    if not handle.docker.attrs["State"]["Running"]:
        raise StackError(f"{member} stopped while it restored:\n{handle.logs(120)}", "read the log above")
    try:
        status = cluster.rest(member, "GET", "/primary", timeout=2.0).status_code
    except httpx.HTTPError as exc:
        return f"REST API: {type(exc).__name__}"
    return None if status == 200 else f"GET /primary answered {status}"


def restore_spec(svc: ServiceSpec, volume: str, target: float) -> ServiceSpec:
    """The member that bootstraps the new cluster from the backup: Patroni's custom bootstrap with
    recovery to ``target``; its post_bootstrap is skipped (the roles and database are restored)."""
    overlay = f"""bootstrap:
  method: restore
  restore:
    command: bash /etc/patroni/restore.sh
    recovery_conf:
      restore_command: cp {RESTORE}/wal/%f %p || cp {RESTORE}/wal/%f.partial %p
      recovery_target_time: '{utc(target)}'
      recovery_target_action: promote
  post_bootstrap: /bin/true
"""
    files = (*svc.files, FileSpec("/etc/patroni/30-restore.yml", template=overlay),
             FileSpec("/etc/patroni/restore.sh", template=RESTORE_SCRIPT))  # fmt: skip
    return replace(svc, files=files, mounts=(*svc.mounts, f"{volume}:{RESTORE}:ro"))


def destroy(stack: Stack, members: list[str]) -> None:
    """Remove every member's container and its data (anonymous volumes too), all at once."""
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        list(pool.map(lambda m: stack.service(m).docker.remove(force=True, v=True), members))


def q2_rebuild_from_backup(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q2-rebuild-from-backup]: its targets are the members destroyed."""
    return rebuild_drill(stack, exp, scenario.targets)[0]


def rebuild_drill(
    stack: Stack, exp: Experiment, targets: tuple[str, ...], target_error_s: float = 0.0
) -> tuple[ExperimentResult, Integrity]:
    """One Q2 run. ``target_error_s`` moves the recovery target the restore is given away from the
    one the drill recorded (a deliberately wrong target: integrity must fail)."""
    members = [t for t in targets if "PATRONI_NAME" in stack.service(t).service.env]
    if not members:
        raise StackError(f"{SCENARIO}: no Patroni member among the targets {list(targets)}",
                         "list the cluster's etcd and Patroni members as the scenario's targets")  # fmt: skip
    cluster = Cluster(stack, tuple(members))
    wait_until("the cluster is healthy", cluster.healthy_problem, REBUILD_TIMEOUT_S)
    prepare(cluster)
    # prepare()'s writes show as replica lag until Patroni's next loop (lag 6528 seen, 1 in 5
    # restores): settle first; the steady state then reads what is.
    with contextlib.suppress(StackError):
        wait_until("the cluster settles", cluster.healthy_problem, SETTLE_TIMEOUT_S)
    exp.steady_state("one leader, one sync standby, no lag", cluster.healthy_problem)
    leader = str(cluster.leader())
    repl_user = stack.render(stack.service(leader).service.env.get("POSTGRES_REPLICATION_USER", "replicator"))
    writes = Writes(cluster)
    exp.steady_state("a write through PgBouncer commits within 2 s", lambda: writes.problem(2.0))
    ledger = Ledger(writes)
    tags = {t: stack.service(t).docker.attrs["Config"]["Image"] for t in targets}
    # The stack file's specs: a member restored by an earlier run still has the restore overlay.
    specs = {t: stack.spec.services[stack.service(t).service.name] for t in targets}
    with backup_volume(stack) as volume, archive_slot(cluster), archiver(stack, volume, leader) as backup:
        wait_until("the archiver streams", lambda: _slot_problem(stack, leader, active=True), 30.0)
        exp.observe(f"WAL archive: pg_receivewal from {leader} into volume {volume} (slot {SLOT})")
        try:
            with exp.rto(writes.probe, period=0.25, probe_timeout=3.0, k=1):
                with exp.ledger(ledger.write, interval_s=0.02):
                    time.sleep(WRITES_S)
                    started = time.monotonic()
                    out = exp.action("base backup", lambda: base_backup(backup, leader, repl_user))
                    exp.observe(f"base backup of {leader} in {time.monotonic() - started:.1f}s {out}".strip())
                    time.sleep(WRITES_S)
                    target = time.time()
                    exp.journal.record(EventKind.NOTE, "recovery target", utc(target))
                    time.sleep(WRITES_S)
                    exp.journal.record(EventKind.FAULT_START, "destroy the cluster", ", ".join(targets))
                    destroy(stack, list(targets))
                exp.journal.record(EventKind.FAULT_END, "destroy the cluster", ", ".join(targets))
                backup.wait(timeout=30)  # pg_receivewal flushed what it had and ended with the cluster
                exp.observe(
                    "archiver after the destroy: "
                    + " | ".join(backup.logs(tail=2).decode(errors="replace").split("\n")).strip(" |")
                )
                rebuild(stack, exp, cluster, specs, tags, volume, target + target_error_s)
                exp.await_recovery(REBUILD_TIMEOUT_S)
        finally:
            writes.close()
    wait_until("the rebuilt cluster is healthy", cluster.healthy_problem, REBUILD_TIMEOUT_S)
    roles = ", ".join(f"{name} {member['role']}" for name, member in sorted(cluster.topology().items()))
    exp.observe(f"rebuilt cluster: {roles}")
    with cluster.connect(timeout_s=5) as conn:
        rows = conn.execute("SELECT id, at FROM drill_ledger").fetchall()
    present = {row[0] for row in rows}
    judged = ledger.judge(target, present)
    newest = max((row[1] for row in rows), default=None)
    exp.observe(
        f"recovery target {utc(target)}; restore given {utc(target + target_error_s)}; newest surviving row"
        f" {newest}; {len(judged.before)} acknowledged before it, {len(judged.after)} sent after it"
    )
    exp.observe(f"RPO (target -> last acknowledged write before the destroy): {judged.rpo_s:.3f}s")
    report = exp.reconcile(sorted(present))
    exp.observe(f"ledger: {report.describe()} (the writes after the target are given up by the PITR)")
    exp.verify(
        "every write acknowledged before the recovery target is present",
        lambda: f"missing ids {_ranges(judged.missing)} ({len(judged.missing)})" if judged.missing else None,
    )
    exp.verify(
        "no write sent after the recovery target is present",
        lambda: f"extra ids {_ranges(judged.extra)} ({len(judged.extra)})" if judged.extra else None,
    )
    return exp.finish(), judged


def rebuild(
    stack: Stack, exp: Experiment, cluster: Any, specs: dict[str, ServiceSpec], tags: dict[str, str], volume: str,
    target: float,
) -> None:  # fmt: skip
    """etcd empty, then the first Patroni member restored from the backup, then the others as replicas."""
    members = list(cluster.members)
    others = [t for t in specs if t not in members]
    first, replicas = members[0], members[1:]
    if others:
        exp.action(f"start {', '.join(others)} empty", lambda: stack.start_services([specs[t] for t in others], tags))
    exp.action(
        f"restore {first} from the base backup to {utc(target)}",
        lambda: stack.start_services([restore_spec(specs[first], volume, target)], tags),
    )
    wait_until(f"{first} leads", lambda: _not_primary(cluster, first), REBUILD_TIMEOUT_S)
    exp.action(f"start {', '.join(replicas)} as new replicas",
               lambda: stack.start_services([specs[t] for t in replicas], tags))  # fmt: skip
