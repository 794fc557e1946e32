"""Drills for the Patroni cluster (design doc 004, section 7.4), run against a booted stack.

Q1, primary failure: SIGKILL the leader while an application writes through PgBouncer. RTO runs
from the first failed write to the first of K consecutive successful writes (on the new leader:
the old one is dead); RPO is read from a ledger of numbered, acknowledged writes (synchronous
replication: none may be lost); then the old primary is started again and must rejoin as a
replica (pg_rewind) and catch up, leaving the cluster with a synchronous standby again.

Cluster-specific code lives here, in the stack's folder: the suite's chaos machinery
(stackcheck.chaos: Experiment, RtoMeter, WriteLedger, faults) does the measuring.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx
import psycopg

from stackcheck import waiting
from stackcheck.background import BackgroundLoop
from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.journal import EventKind
from stackcheck.chaos.meters import WriteLedger
from stackcheck.chaos.spec import Scenario
from stackcheck.errors import StackError
from stackcheck.stack import Stack

MEMBERS = ("patroni-1", "patroni-2", "patroni-3")
POOLER, POOLER_PORT, REST_PORT = "pgbouncer", 6432, 8008
SCENARIO, FREEZE_SCENARIO = "q1-primary-failure", "q1-primary-freeze"
RECOVER_TIMEOUT_S = 120.0  # writes back after the kill (Patroni's defaults: up to ttl + loop_wait)
REJOIN_TIMEOUT_S = 120.0  # the old primary rewound, streaming, synchronous standby again, no lag


@dataclass(frozen=True)
class Profile:
    """Patroni's failure-detection timings and replication mode (DCS settings, applied at run time
    through the REST API)."""

    name: str
    ttl: int
    loop_wait: int
    retry_timeout: int
    synchronous_mode: bool = True

    def dcs(self) -> dict[str, int | bool]:
        return {
            "ttl": self.ttl,
            "loop_wait": self.loop_wait,
            "retry_timeout": self.retry_timeout,
            "synchronous_mode": self.synchronous_mode,
        }


# Patroni's defaults, and the tuned profile of patroni.yml (loop_wait + 2 * retry_timeout <= ttl).
DEFAULTS = Profile("defaults", 30, 10, 10)
TUNED = Profile("tuned", 10, 2, 4)
# The failing variant: the tuned timings with asynchronous replication (Tier 2's mode, not Tier 1's).
TUNED_ASYNC = Profile("tuned-async", 10, 2, 4, synchronous_mode=False)


class Cluster:
    """The members' REST API and the application's path (PgBouncer) of one booted stack."""

    def __init__(self, stack: Stack, members: tuple[str, ...] = MEMBERS) -> None:
        self.stack, self.members = stack, members
        self.synchronous = True  # a healthy cluster has a synchronous standby (apply() changes it)

    # -- Patroni REST ---------------------------------------------------------------------------
    def rest(self, member: str, method: str, path: str, body: Any = None, timeout: float = 3.0) -> httpx.Response:
        env = {k: self.stack.render(v) for k, v in self.stack.service(member).service.env.items()}
        auth = (env.get("PATRONI_RESTAPI_USERNAME", "patroni"), env.get("PATRONI_RESTAPI_PASSWORD", ""))
        url = f"http://127.0.0.1:{self.stack.service(member).port(REST_PORT)}{path}"
        return httpx.request(method, url, json=body, auth=auth, timeout=timeout)

    def running(self) -> list[str]:
        out = []
        for member in self.members:
            handle = self.stack.service(member)
            handle.docker.reload()
            if handle.docker.attrs["State"]["Running"] and not handle.docker.attrs["State"]["Paused"]:
                out.append(member)
        return out

    def topology(self) -> dict[str, dict[str, Any]]:
        """GET /cluster from the first running member that answers: name -> member entry."""
        last = "no member running"
        for member in self.running():
            try:
                response = self.rest(member, "GET", "/cluster", timeout=2.0)
                if response.status_code == 200:
                    return {m["name"]: m for m in response.json()["members"]}
                last = f"{member}: HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{member}: {type(exc).__name__}"
        raise StackError(f"no Patroni member answers GET /cluster ({last})", "read the members' logs")

    def leader(self) -> str | None:
        return next((n for n, m in self.topology().items() if m["role"] == "leader"), None)

    def healthy_problem(self) -> str | None:
        """None when every member runs, one leads, one is the synchronous standby and no replica lags."""
        try:
            members = self.topology()
        except StackError as exc:
            return exc.problem
        seen = ", ".join(f"{n} {m['role']}/{m['state']}/lag {m.get('lag', '-')}" for n, m in sorted(members.items()))
        roles = [m["role"] for m in members.values()]
        if set(members) != set(self.members):
            return f"members {sorted(members)} (want {list(self.members)}): {seen}"
        if roles.count("leader") != 1 or roles.count("sync_standby") != int(self.synchronous):
            return f"need one leader and {int(self.synchronous)} sync_standby: {seen}"
        if any(m["state"] not in ("running", "streaming") for m in members.values()):
            return f"a member is not running: {seen}"
        if any(m["role"] != "leader" and m.get("lag") not in (0, "0") for m in members.values()):
            return f"a replica lags: {seen}"
        return None

    def apply(self, profile: Profile) -> None:
        leader = self.leader()
        if leader is None:
            raise StackError("no leader to change the DCS settings on", "wait for the cluster to be healthy")
        response = self.rest(leader, "PATCH", "/config", profile.dcs())
        config = response.json() if response.status_code == 200 else {}
        if any(config.get(k) != v for k, v in profile.dcs().items()):
            raise StackError(f"PATCH /config {profile.dcs()} answered {response.status_code}: {response.text[:200]}",
                             "check the REST API credentials and the profile's values")  # fmt: skip
        self.synchronous = profile.synchronous_mode

    def config(self) -> dict[str, Any]:
        """The DCS settings in force (GET /config, fresh)."""
        for member in self.running():
            with contextlib.suppress(httpx.HTTPError):
                response = self.rest(member, "GET", "/config", timeout=2.0)
                if response.status_code == 200:
                    return dict(response.json())
        raise StackError("no Patroni member answers GET /config", "read the members' logs")

    def ttl(self) -> int:
        return int(self.config()["ttl"])

    def addresses(self) -> dict[str, str]:
        """Every address of every member on the stack's networks -> member (inet_server_addr() names one)."""
        out = {}
        for member in self.members:
            handle = self.stack.service(member)
            handle.docker.reload()
            for net in handle.docker.attrs["NetworkSettings"]["Networks"].values():
                if net.get("IPAddress"):
                    out[net["IPAddress"]] = member
        return out

    # -- the application's path -----------------------------------------------------------------
    def connect(self, timeout_s: int = 2) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.stack.service(POOLER).port(POOLER_PORT),
            user=self.stack.render(self.stack.service(POOLER).service.env["POSTGRES_APP_USER"]),
            password=self.stack.render(self.stack.service(POOLER).service.env["POSTGRES_APP_PASSWORD"]),
            dbname=self.stack.render(self.stack.service(POOLER).service.env["POSTGRES_DB"]),
            sslmode="verify-full",
            sslrootcert=str(self.stack.tls_files["ca"]),
            connect_timeout=timeout_s,
            autocommit=True,
            # PgBouncer pools by transaction: a server-side prepared statement would land on one
            # server connection and be missing (or already exist) on the next.
            prepare_threshold=None,
        )


SETTLE_TIMEOUT_S = 30.0


def wait_until(what: str, problem: Callable[[], str | None], timeout_s: float) -> float:
    """Poll ``problem`` until it returns None; the seconds it took, or StackError with the last problem."""
    started = time.monotonic()
    last: list[str | None] = ["not checked yet"]

    def settled() -> bool | None:
        last[0] = problem()
        return True if last[0] is None else None

    if waiting.wait_until(settled, timeout_s) is None:
        raise StackError(f"{what}: not within {timeout_s:g}s ({last[0]})", "read the Patroni members' logs")
    return time.monotonic() - started


class Writes:
    """Numbered writes through PgBouncer (or ``connect``): one connection per calling thread, reopened
    after a failure."""

    def __init__(self, cluster: Cluster, connect: Callable[[], psycopg.Connection[Any]] | None = None) -> None:
        self.cluster = cluster
        self.connect = connect or cluster.connect
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self.errors: dict[str, int] = {}  # what the writers saw fail, and how often
        # ledger id -> (server address, timeline, monotonic ack time): which primary acknowledged it
        self.served: dict[int, tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self.connect()
            except psycopg.Error as exc:
                self._record(exc)
                raise
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        try:
            cursor = conn.execute(sql, params)
            return cursor.fetchone() if cursor.description else None
        except psycopg.Error as exc:
            conn.close()
            self._record(exc)
            raise

    def _record(self, exc: psycopg.Error) -> None:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        with self._lock:
            self.errors[text] = self.errors.get(text, 0) + 1

    def ledger(self, number: int) -> None:
        # The answering server's address and its current timeline (from the WAL file name): a
        # write acknowledged by a second primary shows as another member (or timeline) in ``served``.
        row = self._execute(
            "INSERT INTO drill_ledger (id) VALUES (%s) RETURNING inet_server_addr()::text,"
            " substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            (number,),
        )
        assert row is not None
        with self._lock:
            self.served[number] = (str(row[0]).split("/")[0], int(row[1], 16), time.monotonic())

    def probe(self, timeout_s: float) -> bool:
        started = time.monotonic()
        self._execute("INSERT INTO drill_probe DEFAULT VALUES")
        return time.monotonic() - started <= timeout_s

    def problem(self, timeout_s: float) -> str | None:
        try:
            return None if self.probe(timeout_s) else f"a write took longer than {timeout_s:g}s"
        except psycopg.Error as exc:
            return f"a write failed: {type(exc).__name__}: {str(exc).strip()}"

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


def read_back(cluster: Cluster, exp: Experiment, timeout_s: float = 30.0) -> list[int]:
    """The ledger's surviving ids through PgBouncer, then emptied for the next run (the old
    primary was read first). A failed read is retried (and observed: an application saw it too)."""
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with cluster.connect(timeout_s=5) as conn:
                ids = [row[0] for row in conn.execute("SELECT id FROM drill_ledger")]
                conn.execute("TRUNCATE drill_ledger")
            break
        except psycopg.Error as exc:
            failures.append(f"{type(exc).__name__}: {str(exc).strip()}")
            if time.monotonic() > deadline:
                raise StackError(f"the ledger cannot be read back: {failures[-1]}", "read PgBouncer's log") from exc
            time.sleep(0.5)
    if failures:
        exp.observe(f"reading the ledger back failed {len(failures)} times first: {failures[0]}")
    return ids


def prepare(cluster: Cluster) -> None:
    with cluster.connect(timeout_s=5) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS drill_ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("CREATE TABLE IF NOT EXISTS drill_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("TRUNCATE drill_ledger, drill_probe")


class Variant(Enum):
    """How Q1 takes the leader out."""

    KILL = "kill"  # SIGKILL: the container dies; started again after the failover
    FREEZE = "freeze"  # docker pause (every process SIGSTOPped): thawed after the failover, it must demote


def q1_primary_failure(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q1-primary-failure]: one Q1 run with the profile the cluster runs
    (patroni.yml's); the scenario's targets are the members, whichever of them leads is killed."""
    cluster = Cluster(stack, scenario.targets)
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)
    return q1_once(stack, cluster, exp)


def q1_primary_freeze(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q1-primary-freeze]: the leader frozen instead of killed."""
    cluster = Cluster(stack, scenario.targets)
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)
    return q1_once(stack, cluster, exp, Variant.FREEZE)


def apply_profile(cluster: Cluster, profile: Profile) -> None:
    cluster.synchronous = bool(cluster.config().get("synchronous_mode"))  # as an earlier run left it
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    cluster.apply(profile)
    # The members reload the new settings on their next loop: start from a settled cluster again.
    wait_until(f"the cluster is healthy with the {profile.name} profile", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)


def q1_series(
    stack: Stack, profile: Profile = TUNED, kills: int = 1, variant: Variant = Variant.KILL
) -> list[ExperimentResult]:
    """``kills`` runs of Q1 with ``profile`` applied first, one after the other (each from a healthy
    cluster). With an asynchronous profile the replicas' replication connections are cut for the
    last second before the kill: the writes the leader acknowledges then are on no replica."""
    cluster = Cluster(stack)
    apply_profile(cluster, profile)
    results = []
    for _ in range(kills):
        exp = Experiment(SCENARIO if variant is Variant.KILL else FREEZE_SCENARIO, stack)
        exp.observe(f"profile {profile.name}: {profile.dcs()}")
        results.append(q1_once(stack, cluster, exp, variant, cut_replication=not profile.synchronous_mode))
    return results


def cut_replication_until(stack: Stack, leader: str, seconds: float) -> int:
    """Terminate the leader's WAL senders every 0.1 s for ``seconds``: a replica reconnects only after
    wal_retrieve_retry_interval (5 s), so what the leader commits meanwhile reaches no replica.
    Returns how many senders were terminated."""
    cut = 0
    deadline = time.monotonic() + seconds
    with stack.postgres(leader, superuser=True, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication").fetchall()
            cut += sum(1 for (done,) in rows if done)
            time.sleep(0.1)
    return cut


def q1_once(
    stack: Stack, cluster: Cluster, exp: Experiment, variant: Variant = Variant.KILL, cut_replication: bool = False,
    k: int = 3,
) -> ExperimentResult:  # fmt: skip
    # Patroni reports a replica's lag as of its last loop: the writes of a previous run can show
    # for one loop_wait after they stopped. Settle first; the steady state then reads what is.
    with contextlib.suppress(StackError):
        wait_until("the cluster settles", cluster.healthy_problem, SETTLE_TIMEOUT_S)
    exp.steady_state("one leader, its standbys streaming, no lag", cluster.healthy_problem)
    old = cluster.leader()
    assert old is not None
    handle = stack.service(old)
    before = cluster.addresses()  # a member started again may get another address
    writes = Writes(cluster)
    exp.steady_state("a write through PgBouncer commits within 2 s", lambda: writes.problem(2.0))
    ledger = exp.ledger(writes.ledger, interval_s=0.02)
    poller = RolePoller(cluster, old)
    fault = (
        faults.kill(handle, journal=exp.journal, restart=False)
        if variant is Variant.KILL
        else faults.pause(handle, journal=exp.journal)
    )
    try:
        with exp.rto(writes.probe, period=0.1, probe_timeout=2.0, k=k), ledger:
            time.sleep(1.0)  # writes flowing before the fault
            if cut_replication:
                cut = exp.action(
                    "cut the replicas' replication connections for 1 s",
                    lambda: cut_replication_until(stack, old, 1.0),
                    "pg_terminate_backend of the leader's WAL senders every 0.1 s, writes go on",
                )
                exp.observe(f"{cut} WAL sender connections terminated in the last second before the fault")
            with contextlib.ExitStack() as watch:
                with fault:
                    exp.await_recovery(RECOVER_TIMEOUT_S)
                    # Never start (or thaw) the old primary while its leader key lives: it leads again.
                    wait_until("a new leader", lambda: None if cluster.leader() not in (None, old) else "none", 60.0)
                    if variant is Variant.FREEZE:
                        watch.enter_context(poller)  # from the thaw on: how long the old leader stays primary
                if variant is Variant.FREEZE:
                    _judge_thaw(exp, poller, old)
            time.sleep(1.0)  # writes keep flowing on the new leader
    finally:
        writes.close()
    seen = "; ".join(f"{n} x {text}" for text, n in sorted(writes.errors.items(), key=lambda e: -e[1]))
    exp.observe(f"failed writes: {seen or 'none'}")
    new = cluster.leader()
    exp.observe(f"{'killed' if variant is Variant.KILL else 'froze'} leader {old}; new leader {new}")
    exp.verify("a new leader", lambda: None if new not in (None, old) else f"leader is {new}")
    exp.verify(
        "no write acknowledged by two primaries", lambda: split_brain(writes.served, {**cluster.addresses(), **before})
    )
    if variant is Variant.KILL:
        exp.action(f"start {old} again", handle.docker.start)
    rejoin = wait_until(f"{old} rejoins as a replica", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    exp.observe(f"{old} rejoined as {cluster.topology()[old]['role']} and caught up in {rejoin:.1f}s")
    return _read_back_and_judge(stack, cluster, exp, old)


def _judge_thaw(exp: Experiment, poller: RolePoller, old: str) -> None:
    demoted = poller.wait_not_primary(time.monotonic(), 30.0)
    exp.observe(
        f"thawed {old}: "
        + ("no writable primary" if demoted is not None else "still a writable primary")
        + f" {30.0 if demoted is None else demoted:.1f}s after the thaw ({poller.seen()})"
    )
    exp.verify(f"thawed {old} demotes", lambda: None if demoted is not None else "still primary 30 s after the thaw")


def _read_back_and_judge(stack: Stack, cluster: Cluster, exp: Experiment, old: str) -> ExperimentResult:
    with stack.postgres(old, superuser=True) as conn:
        on_old = {row[0] for row in conn.execute("SELECT id FROM drill_ledger")}
    surviving = read_back(cluster, exp)
    report = exp.reconcile(surviving)
    exp.observe(f"ledger: {report.describe()}")
    exp.verify(
        "no acknowledged write lost",
        lambda: f"{len(report.lost)} acknowledged writes lost, ids {list(report.lost)}" if report.lost else None,
    )
    exp.verify("no write duplicated", lambda: f"ids {list(report.duplicates)}" if report.duplicates else None)
    exp.verify(
        f"{old} holds every surviving write",
        lambda: None if on_old >= set(surviving) else f"{len(set(surviving) - on_old)} writes missing on {old}",
    )
    return exp.finish()


def split_brain(served: dict[int, tuple[str, int, float]], addresses: dict[str, str]) -> str | None:
    """None when the members that acknowledged writes did so one after the other; else which
    acknowledged while another had already begun to (two primaries at once), with the exact ids."""
    spans: dict[str, list[tuple[float, int, int]]] = {}  # member -> [(ack time, id, timeline)]
    for number, (address, timeline, at) in served.items():
        spans.setdefault(addresses.get(address, address), []).append((at, number, timeline))
    for acks in spans.values():
        acks.sort()
    for a, a_acks in spans.items():
        for b, b_acks in spans.items():
            if a == b or a_acks[0][0] > b_acks[0][0]:
                continue  # look from the member that acknowledged first (a) at the later one (b)
            after = [n for at, n, _ in a_acks if at > b_acks[0][0]]
            if after:
                return (
                    f"split brain: {a} (timeline {a_acks[-1][2]}) acknowledged {len(after)} writes (ids "
                    f"{after[:20]}{' ...' if len(after) > 20 else ''}) after {b} (timeline {b_acks[0][2]}) had "
                    f"acknowledged id {b_acks[0][1]}"
                )
    return None


class RolePoller(BackgroundLoop):
    """Polls one member directly (not through the application's path): PostgreSQL's own
    ``pg_is_in_recovery()`` over its published port, and its Patroni REST role, every 0.2 s."""

    interval_s = 0.2

    def __init__(self, cluster: Cluster, member: str) -> None:
        self.cluster, self.member = cluster, member
        # Read while the member runs: the engine answers no port of a paused container.
        handle = cluster.stack.service(member)
        self.pg_port, self.rest_url = handle.port(5432), f"http://127.0.0.1:{handle.port(REST_PORT)}/patroni"
        env = {k: cluster.stack.render(v) for k, v in handle.service.env.items()}
        self.password, self.dbname = env["POSTGRES_PASSWORD"], env.get("POSTGRES_DB", "postgres")
        self.samples: list[tuple[float, bool | None, str | None]] = []  # (mono, in recovery, REST role)
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def loop_name(self) -> str:
        return f"role-{self.member}"

    def _recovery(self) -> bool | None:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    host="127.0.0.1", port=self.pg_port, dbname=self.dbname, user="postgres",
                    password=self.password, connect_timeout=1, autocommit=True,
                )  # fmt: skip
            return bool(self._conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
        except psycopg.Error:
            self.finish()
            return None  # not answering: not a writable primary either

    def _role(self) -> str | None:
        try:
            return str(httpx.get(self.rest_url, timeout=1.0).json()["role"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def tick(self) -> None:
        at = time.monotonic()
        self.samples.append((at, self._recovery(), self._role()))

    def finish(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def not_primary_at(self, since: float) -> float | None:
        """The first sample after ``since`` where PostgreSQL was no writable primary (in recovery or down)."""
        return next((at for at, recovery, _ in self.samples if at >= since and recovery is not False), None)

    def role_changed_at(self, since: float) -> float | None:
        """The first sample after ``since`` where the REST API said anything but primary (or did not answer)."""
        return next((at for at, _, role in self.samples if at >= since and role not in ("primary", "master")), None)

    def wait_not_primary(self, since: float, timeout_s: float) -> float | None:
        """Seconds from ``since`` until PostgreSQL was no writable primary, None if not within the timeout."""
        found = waiting.wait_until(lambda: self.not_primary_at(since), timeout_s, interval_s=0.1)
        return None if found is None else found - since

    def seen(self) -> str:
        """The states in order, each once: e.g. 'primary/primary -> in recovery/replica'."""
        out: list[str] = []
        for _, recovery, role in self.samples:
            state = f"{'down' if recovery is None else ('in recovery' if recovery else 'primary')}/{role or '-'}"
            if not out or out[-1] != state:
                out.append(state)
        return " -> ".join(out[:8]) or "no sample"


# -- Q3: network partition -----------------------------------------------------------------------

Q3_SCENARIO = "q3-network-partition"
PINNED_BASE = 1_000_000  # ids of the client pinned to the old leader, apart from the PgBouncer ledger's


def q3_network_partition(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q3-network-partition]: the leader, whichever member it is, cut off the
    scenario's network (coord: etcd and the Patroni peers) while HAProxy still reaches it."""
    cluster = Cluster(stack, scenario.targets)
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)
    return q3_once(stack, cluster, exp, str(scenario.params["network"]))


def q3_series(stack: Stack, profile: Profile = TUNED, fencing_broken: bool = False) -> ExperimentResult:
    """One Q3 run with ``profile`` applied first. ``fencing_broken``: the partitioned leader's Patroni
    agent is frozen too (SIGSTOP of PID 1; no watchdog kills PostgreSQL), so nothing demotes it."""
    cluster = Cluster(stack)
    apply_profile(cluster, profile)
    exp = Experiment(Q3_SCENARIO, stack)
    exp.observe(f"profile {profile.name}: {profile.dcs()}")
    return q3_once(stack, cluster, exp, "coord", fencing_broken)


# Patroni as PID 1 forks itself: PID 1 only reaps zombies, its child (parent PID 1) is the agent.
_SIGNAL_AGENT = """import os, signal, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd, status = open(f"/proc/{pid}/cmdline", "rb").read(), open(f"/proc/{pid}/status").read()
    except OSError:
        continue
    if pid != "1" and b"bin/patroni" in cmd and "\\nPPid:\\t1\\n" in status:
        os.kill(int(pid), getattr(signal, sys.argv[1]))
        print(pid)
"""


def signal_agent(stack: Stack, member: str, signal: str) -> None:
    code, out = stack.service(member).docker.exec_run(["python3", "-c", _SIGNAL_AGENT, signal])
    if code != 0 or not out.strip():
        raise StackError(f"{signal} to the Patroni agent of {member} failed: {out.decode()[-300:]!r}",
                         "read the member's process list (docker top)")  # fmt: skip


@contextlib.contextmanager
def frozen_agent(stack: Stack, member: str, exp: Experiment) -> Iterator[None]:
    """SIGSTOP the member's Patroni agent (PostgreSQL, its child, runs on: no watchdog fences it),
    SIGCONT on exit."""
    what = f"SIGSTOP the Patroni agent of {member}"
    exp.journal.record(EventKind.FAULT_START, what, "no watchdog")
    try:
        signal_agent(stack, member, "SIGSTOP")
        yield
    finally:
        try:
            signal_agent(stack, member, "SIGCONT")
        finally:
            exp.journal.record(EventKind.FAULT_END, what, "SIGCONT")


def q3_once(
    stack: Stack, cluster: Cluster, exp: Experiment, network: str, fencing_broken: bool = False, k: int = 3
) -> ExperimentResult:
    # Patroni reports a replica's lag as of its last loop: the writes of a previous run can show
    # for one loop_wait after they stopped. Settle first; the steady state then reads what is.
    with contextlib.suppress(StackError):
        wait_until("the cluster settles", cluster.healthy_problem, SETTLE_TIMEOUT_S)
    exp.steady_state("one leader, its standbys streaming, no lag", cluster.healthy_problem)
    old = cluster.leader()
    assert old is not None
    ttl = cluster.ttl()
    before = cluster.addresses()
    writes = Writes(cluster)
    # A client of the old leader that bypasses HAProxy: it reaches the old leader whatever routes.
    pinned = Writes(cluster, lambda: stack.postgres(old, autocommit=True, prepare_threshold=None))
    exp.steady_state("a write through PgBouncer commits within 2 s", lambda: writes.problem(2.0))
    ledger = exp.ledger(writes.ledger, interval_s=0.02)
    pinned_ledger = WriteLedger(lambda n: pinned.ledger(PINNED_BASE + n), interval_s=0.05)
    poller = RolePoller(cluster, old)
    demoted: float | None = None
    try:
        with exp.rto(writes.probe, period=0.1, probe_timeout=2.0, k=k), ledger, pinned_ledger, poller:
            time.sleep(1.0)  # writes flowing before the partition
            with contextlib.ExitStack() as held:
                if fencing_broken:
                    held.enter_context(frozen_agent(stack, old, exp))
                held.enter_context(faults.disconnect(stack, stack.service(old), network, journal=exp.journal))
                cut = time.monotonic()
                exp.await_recovery(RECOVER_TIMEOUT_S)
                wait_until("a new leader", lambda: None if cluster.leader() not in (None, old) else "none yet", 60.0)
                demoted = poller.wait_not_primary(cut, ttl + 10.0)
                time.sleep(1.0)  # both the old and the new leader offered writes for a while
            time.sleep(1.0)  # writes after the heal
    finally:
        writes.close()
        pinned.close()
    role = poller.role_changed_at(cut)
    exp.observe(f"partitioned {old} from {network}; ttl {ttl}s; the old leader as polled: {poller.seen()}")
    exp.observe(
        f"{old} no writable primary (pg_is_in_recovery or refusing) "
        + (f"{demoted:.1f}s after the partition" if demoted is not None else f"not within {ttl + 10}s")
        + (f"; its REST role changed {role - cut:.1f}s after" if role is not None else "; its REST role never changed")
    )
    exp.verify(
        f"{old} demotes within ttl ({ttl}s)",
        lambda: None if demoted is not None and demoted <= ttl else f"still a writable primary after {ttl}s",
    )
    everyone = {**writes.served, **pinned.served}
    addresses = {**cluster.addresses(), **before}
    new_acks = [
        at for address, _, at in writes.served.values() if addresses.get(address) not in (None, old) and at > cut
    ]
    if new_acks:
        exp.observe(f"first write acknowledged by the new leader {min(new_acks) - cut:.1f}s after the partition")
    exp.verify("no write acknowledged by two primaries", lambda: split_brain(everyone, addresses))
    seen = "; ".join(f"{n} x {text}" for text, n in sorted({**pinned.errors, **writes.errors}.items(),
                                                          key=lambda e: -e[1])[:6])  # fmt: skip
    exp.observe(f"failed writes: {seen or 'none'}")
    rejoin = wait_until(f"{old} rejoins as a replica after the heal", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    exp.observe(f"healed; {old} back as {cluster.topology()[old]['role']}, replication caught up in {rejoin:.1f}s")
    exp.verify("a new leader", lambda: None if cluster.leader() not in (None, old) else "the old leader leads")
    surviving_pinned: list[int] = []
    with cluster.connect(timeout_s=5) as conn:
        surviving_pinned = [r[0] - PINNED_BASE for r in conn.execute(
            "SELECT id FROM drill_ledger WHERE id >= %s", (PINNED_BASE,))]  # fmt: skip
        conn.execute("DELETE FROM drill_ledger WHERE id >= %s", (PINNED_BASE,))
    pinned_report = pinned_ledger.reconcile(surviving_pinned)
    exp.observe(f"client pinned to {old}: {pinned_report.describe()}")
    exp.verify(
        f"no write the pinned client saw acknowledged by {old} lost",
        lambda: f"{pinned_report.describe()} (ids {PINNED_BASE} + n)" if pinned_report.lost else None,
    )
    return _read_back_and_judge(stack, cluster, exp, old)
