"""Q4 of the quarterly drills (design doc 004 section 7.4): lose region A, fail over to region B,
fail back. The stack is regions.toml: region A is the cluster of stack.toml, region B a Patroni
standby cluster (its own etcd and network) streaming from region A through the Toxiproxy WAN link
patroni-b1->haproxy, under the scenario's latency.

Failover: every region-A container (etcd, Patroni, HAProxy) is removed at once while a ledger
writes through PgBouncer; region B is promoted (its standby_cluster removed by PATCH /config) and
clients are moved by repointing the link PgBouncer talks through (pgbouncer->haproxy) at
patroni-b1: the infrastructure-side move a DNS or load-balancer change would be, PgBouncer's
address unchanged. PgBouncer and Toxiproxy stand for the global entry point and survive the loss.
Replication across regions is asynchronous: the writes region A acknowledged and had not shipped
are lost, and reported by id.

Failback: region A is rebuilt empty as a standby cluster of B (through the link
patroni-1->patroni-b1), then switched back with no loss: clients paused, region A caught up to
B's last LSN, B demoted to a standby of A, A promoted, clients moved back.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.journal import EventKind
from stackcheck.chaos.meters import LedgerReport, WriteLedger
from stackcheck.chaos.scenarios import load_hook
from stackcheck.chaos.spec import Hook, Scenario
from stackcheck.errors import StackError, ToxiproxyError
from stackcheck.stack import Stack, run_healthcheck
from stackcheck.stackfile import FileSpec, Readiness

HERE = Path(__file__).resolve().parent


def _sibling(file: str, name: str) -> Any:
    """A name of a sibling drill module, from the module the chaos runner loaded."""
    return load_hook(Hook(HERE / file, name))


Cluster, Writes, wait_until, prepare = (_sibling("hooks.py", n) for n in ("Cluster", "Writes", "wait_until", "prepare"))
destroy, not_primary = _sibling("backup.py", "destroy"), _sibling("backup.py", "_not_primary")

SCENARIO = "q4-region-failover"
REGION_A = ("etcd-1", "etcd-2", "etcd-3", "patroni-1", "patroni-2", "patroni-3", "haproxy")
A_MEMBERS = ("patroni-1", "patroni-2", "patroni-3")
B_LEADER = "patroni-b1"
CLIENT_LINK = "pgbouncer->haproxy"  # PgBouncer's server side: repointed to move the clients
A_HOME = "haproxy:5000"  # the link's upstream in region A
B_HOME = "patroni-b1:5432"
WAN_BACK = "patroni-1->patroni-b1"  # region A, rebuilt as a standby of B, streams through it
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Move:
    """One direction of the drill, measured: RTO from the first failed write to the first of K
    successes in the other region, and the acknowledged writes the other region lacks."""

    name: str
    rto_s: float | None
    loss: LedgerReport

    def describe(self) -> str:
        rto = "not recovered" if self.rto_s is None else f"RTO {self.rto_s:.3f}s"
        return f"{self.name}: {rto}; {self.loss.describe()}"


def _ids(stack: Stack, member: str) -> set[int]:
    with stack.postgres(member, superuser=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM drill_ledger")}


def _receiving(stack: Stack, member: str) -> str | None:
    """None when ``member``'s WAL receiver streams (a standby leader following the other region)."""
    try:
        with stack.postgres(member, superuser=True) as conn:
            row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
    except psycopg.Error as exc:
        return f"{member}: {type(exc).__name__}"
    return None if row is not None and row[0] == "streaming" else f"{member} WAL receiver: {row}"


def _role(cluster: Any, member: str, role: str) -> str | None:
    try:
        members = cluster.topology()
    except StackError as exc:
        return exc.problem
    found = members.get(member, {}).get("role")
    return None if found == role else f"{member} is {found}, not {role}"


def _lag_bytes(stack: Stack, primary: str, standby: str) -> str | None:
    with stack.postgres(primary, superuser=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    with stack.postgres(standby, superuser=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", (lsn[0] if lsn else None,))
        lag = row.fetchone()
    return None if lag is not None and lag[0] is not None and lag[0] <= 0 else f"{standby} replays {lag} bytes behind"


def _loss(ledger: WriteLedger, since: float, until: float, present: set[int]) -> LedgerReport:
    """The ledger's writes acknowledged in [since, until] (monotonic) against the ids the other
    region holds (only ids of that window count)."""
    part = WriteLedger(ledger.writer, acks={n: t for n, t in ledger.acks.items() if since <= t <= until})
    first, last = min(part.acks, default=1), max(part.acks, default=0)
    part.attempted = last - first + 1
    return part.reconcile(sorted(n for n in present if first <= n <= last))


def _move_clients(stack: Stack, upstream: str) -> None:
    """Repoint the link PgBouncer talks through. Toxiproxy restarts the proxy for it, which can
    outlast the API timeout while a dial to the lost region hangs: then wait until it shows."""
    with contextlib.suppress(ToxiproxyError):
        stack.toxiproxy.set_upstream(CLIENT_LINK, upstream)

    def moved() -> str | None:
        try:
            found = stack.toxiproxy.get(CLIENT_LINK).upstream
        except ToxiproxyError as exc:
            return exc.problem
        return None if found == upstream else f"upstream still {found}"

    wait_until(f"{CLIENT_LINK} points at {upstream}", moved, 30.0)


def _streams_again(stack: Stack) -> str | None:
    """B's WAL receiver reconnects to A's new leader within its retry interval (5 s) and HAProxy's check."""
    try:
        wait_until(f"{B_LEADER} streams from region A", lambda: _receiving(stack, B_LEADER), 60.0)
    except StackError as exc:
        return f"{exc.problem}; {B_LEADER}'s log: {stack.service(B_LEADER).logs(8)}"
    return None


def _patch(cluster: Any, member: str, body: dict[str, Any]) -> None:
    response = cluster.rest(member, "PATCH", "/config", body)
    if response.status_code != 200:
        raise StackError(f"PATCH /config {body} on {member} answered {response.status_code}: {response.text[:200]}",
                         "check the REST API credentials")  # fmt: skip


def q4_region_failover(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q4-region-failover]: its target is the WAN link, its params the latency."""
    return region_drill(stack, exp, scenario)[0]


def region_drill(
    stack: Stack, exp: Experiment, scenario: Scenario, wan_down_s: float = 0.0
) -> tuple[ExperimentResult, Move, Move]:
    """One Q4 run. ``wan_down_s``: the WAN link cut that long before region A is lost, so that
    region A's writes of that window never reach B (a loss the RPO check must see)."""
    [wan] = scenario.targets
    region_a, region_b = Cluster(stack, A_MEMBERS), Cluster(stack, (B_LEADER,))
    wait_until("region A is healthy", region_a.healthy_problem, TIMEOUT_S)
    wait_until("region B streams from region A", lambda: _receiving(stack, B_LEADER), TIMEOUT_S)
    prepare(region_a)
    exp.steady_state("region A: one leader, one sync standby, no lag", region_a.healthy_problem)
    exp.steady_state("region B: standby leader streaming from A", lambda: _receiving(stack, B_LEADER))
    writes = Writes(region_a)
    exp.steady_state("a write through PgBouncer commits within 2 s", lambda: writes.problem(2.0))
    ledger = exp.ledger(writes.ledger, interval_s=0.02)
    tags = {t: stack.service(t).docker.attrs["Config"]["Image"] for t in REGION_A}
    specs = {t: stack.spec.services[t] for t in REGION_A}
    try:
        with faults.latency(stack.link(wan), **scenario.params, journal=exp.journal):
            meter = exp.rto(writes.probe, period=0.1, probe_timeout=2.0, k=3)
            with meter, ledger:
                time.sleep(2.0)  # writes replicate to B under the WAN latency
                # From the loss's start (the RTO) to its end: region A may acknowledge writes
                # until its last container is gone, and B takes none before it is promoted.
                lost_at, gone_at = _lose_region_a(stack, exp, wan, wan_down_s)
                exp.action(
                    f"promote region B ({B_LEADER})", lambda: _patch(region_b, B_LEADER, {"standby_cluster": None})
                )
                wait_until(f"{B_LEADER} leads", lambda: not_primary(region_b, B_LEADER), TIMEOUT_S)
                exp.action(f"move clients: {CLIENT_LINK} -> {B_HOME}", lambda: _move_clients(stack, B_HOME))
                exp.await_recovery(TIMEOUT_S)
                time.sleep(1.0)  # writes on B
                failover = Move("failover", meter.result(lost_at - meter.probe_timeout).rto_s,
                                _loss(ledger, 0.0, gone_at, _ids(stack, B_LEADER)))  # fmt: skip
                exp.observe(failover.describe())
                _rebuild_region_a(stack, exp, specs, tags)
                failback = _switch_back(stack, exp, region_a, region_b, meter, ledger, gone_at)
                time.sleep(1.0)  # writes on A again
    finally:
        writes.close()
    exp.observe(failback.describe())
    wait_until("region A is healthy again", region_a.healthy_problem, TIMEOUT_S)
    exp.verify("region B streams from region A again", lambda: _streams_again(stack))
    rto_limit = exp.objective.rto_s if exp.objective is not None else None
    if rto_limit is not None:
        met = failback.rto_s is not None and failback.rto_s <= rto_limit
        exp.verify(f"failback RTO within {rto_limit:g}s", lambda: None if met else failback.describe())
    exp.verify("the failback loses no acknowledged write",
               lambda: f"lost ids {list(failback.loss.lost)}" if failback.loss.lost else None)  # fmt: skip
    with region_a.connect(timeout_s=5) as conn:
        surviving = [row[0] for row in conn.execute("SELECT id FROM drill_ledger")]
    report = exp.reconcile(surviving)
    exp.observe(f"ledger over the drill, read on region A through PgBouncer: {report.describe()}")
    return exp.finish(), failover, failback


def _lose_region_a(stack: Stack, exp: Experiment, wan: str, wan_down_s: float) -> tuple[float, float]:
    """Remove every region-A container at once (optionally after the WAN was cut for a while)."""
    if wan_down_s:
        with faults.link_down(stack.link(wan), journal=exp.journal):
            time.sleep(wan_down_s)  # region A acknowledges writes B never receives
            return _remove_region_a(stack, exp)
    return _remove_region_a(stack, exp)


def _remove_region_a(stack: Stack, exp: Experiment) -> tuple[float, float]:
    start = exp.journal.record(EventKind.FAULT_START, "lose region A", ", ".join(REGION_A))
    destroy(stack, list(REGION_A))
    end = exp.journal.record(EventKind.FAULT_END, "lose region A", ", ".join(REGION_A))
    return start.mono, end.mono


def _rebuild_region_a(stack: Stack, exp: Experiment, specs: dict[str, Any], tags: dict[str, str]) -> None:
    """Region A from nothing: etcd empty, patroni-1 a standby leader cloned from B through the WAN,
    then its replicas and HAProxy."""
    overlay = FileSpec("/etc/patroni/30-region.yml", template=(
        "bootstrap:\n  dcs:\n    standby_cluster:\n      host: toxiproxy\n"
        f"      port: {stack.spec.links[WAN_BACK].listen_port}\n      create_replica_methods: [basebackup]\n"
    ))  # fmt: skip
    standby = {m: replace(specs[m], files=(*specs[m].files, overlay)) for m in A_MEMBERS}
    etcd = [t for t in REGION_A if t.startswith("etcd")]
    exp.action("rebuild region A: etcd", lambda: stack.start_services([specs[t] for t in etcd], tags))
    exp.action(
        "rebuild region A: patroni-1 as a standby of B", lambda: stack.start_services([standby["patroni-1"]], tags)
    )
    # HAProxy's healthcheck means "writes have a leader": no member of a standby cluster answers
    # /primary (Patroni's standby leader says 503), so it is started as running here and waited
    # for once region A is promoted. Awaiting it now passed only when a poll fell in HAProxy's
    # first second, before its first checks marked the presumed-up servers down.
    haproxy = replace(specs["haproxy"], ready=Readiness.RUNNING)
    rest = [standby["patroni-2"], standby["patroni-3"], haproxy]
    exp.action("rebuild region A: replicas and HAProxy", lambda: stack.start_services(rest, tags))
    wait_until("patroni-1 streams from region B", lambda: _receiving(stack, "patroni-1"), TIMEOUT_S)


def _switch_back(
    stack: Stack, exp: Experiment, region_a: Any, region_b: Any, meter: Any, ledger: WriteLedger, gone_at: float
) -> Move:
    """The planned move back: clients paused, A caught up, B demoted to a standby of A, A promoted,
    clients moved back to region A's HAProxy."""
    paused = exp.journal.record(EventKind.ACTION, "failback: pause clients", f"{CLIENT_LINK} disabled")
    stack.toxiproxy.set_enabled(CLIENT_LINK, False)
    time.sleep(0.5)  # a write in flight when the link closed has failed or committed on B
    wait_until("region A caught up with B", lambda: _lag_bytes(stack, B_LEADER, "patroni-1"), TIMEOUT_S)
    on_b = _ids(stack, B_LEADER)
    standby_of_a = {"host": "toxiproxy", "port": stack.spec.links["patroni-b1->haproxy"].listen_port,
                    "create_replica_methods": ["basebackup"]}  # fmt: skip
    exp.action(
        "failback: region B becomes a standby of A",
        lambda: _patch(region_b, B_LEADER, {"standby_cluster": standby_of_a}),
    )
    wait_until(f"{B_LEADER} is a standby leader", lambda: _role(region_b, B_LEADER, "standby_leader"), TIMEOUT_S)
    exp.action("failback: promote region A", lambda: _patch(region_a, "patroni-1", {"standby_cluster": None}))
    wait_until("patroni-1 leads", lambda: not_primary(region_a, "patroni-1"), TIMEOUT_S)
    wait_until("HAProxy routes writes to region A", lambda: run_healthcheck(stack.service("haproxy").docker), TIMEOUT_S)
    exp.action(f"failback: move clients: {CLIENT_LINK} -> {A_HOME}", lambda: _move_clients(stack, A_HOME))
    stack.toxiproxy.set_enabled(CLIENT_LINK, True)
    since = paused.mono - meter.probe_timeout
    wait_until(
        "writes through PgBouncer on region A",
        lambda: None if meter.result(since).recovered_at else "not yet",
        TIMEOUT_S,
    )
    exp.observe(f"region A took every write region B held: {sorted(on_b - _ids(stack, 'patroni-1')) or 'yes'}")
    return Move("failback", meter.result(since).rto_s, _loss(ledger, gone_at, paused.mono, _ids(stack, "patroni-1")))
