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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from stackcheck import waiting
from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.spec import Scenario
from stackcheck.errors import StackError
from stackcheck.stack import Stack

MEMBERS = ("patroni-1", "patroni-2", "patroni-3")
POOLER, POOLER_PORT, REST_PORT = "pgbouncer", 6432, 8008
SCENARIO = "q1-primary-failure"
RECOVER_TIMEOUT_S = 120.0  # writes back after the kill (Patroni's defaults: up to ttl + loop_wait)
REJOIN_TIMEOUT_S = 120.0  # the old primary rewound, streaming, synchronous standby again, no lag


@dataclass(frozen=True)
class Profile:
    """Patroni's failure-detection timings (DCS settings, applied at run time through the REST API)."""

    name: str
    ttl: int
    loop_wait: int
    retry_timeout: int

    def dcs(self) -> dict[str, int]:
        return {"ttl": self.ttl, "loop_wait": self.loop_wait, "retry_timeout": self.retry_timeout}


# Patroni's defaults, and the tuned profile of patroni.yml (loop_wait + 2 * retry_timeout <= ttl).
DEFAULTS = Profile("defaults", 30, 10, 10)
TUNED = Profile("tuned", 10, 2, 4)


class Cluster:
    """The members' REST API and the application's path (PgBouncer) of one booted stack."""

    def __init__(self, stack: Stack, members: tuple[str, ...] = MEMBERS) -> None:
        self.stack, self.members = stack, members

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
            if handle.docker.attrs["State"]["Running"]:
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
        if roles.count("leader") != 1 or roles.count("sync_standby") != 1:
            return f"need one leader and one sync_standby: {seen}"
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
    """Numbered writes through PgBouncer: one connection per calling thread, reopened after a failure."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self.errors: dict[str, int] = {}  # what the writers saw fail, and how often
        self._lock = threading.Lock()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self.cluster.connect()
            except psycopg.Error as exc:
                self._record(exc)
                raise
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        try:
            conn.execute(sql, params)
        except psycopg.Error as exc:
            conn.close()
            self._record(exc)
            raise

    def _record(self, exc: psycopg.Error) -> None:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        with self._lock:
            self.errors[text] = self.errors.get(text, 0) + 1

    def ledger(self, number: int) -> None:
        self._execute("INSERT INTO drill_ledger (id) VALUES (%s)", (number,))

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


def q1_primary_failure(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The hook of [scenarios.q1-primary-failure]: one Q1 run with the profile the cluster runs
    (patroni.yml's); the scenario's targets are the members, whichever of them leads is killed."""
    cluster = Cluster(stack, scenario.targets)
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)
    return q1_once(stack, cluster, exp)


def q1_series(stack: Stack, profile: Profile = TUNED, kills: int = 1) -> list[ExperimentResult]:
    """``kills`` runs of Q1 with ``profile`` applied first, one after the other (each from a healthy cluster)."""
    cluster = Cluster(stack)
    wait_until("the cluster is healthy", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    cluster.apply(profile)
    # The members reload the new settings on their next loop: start from a settled cluster again.
    wait_until(f"the cluster is healthy with the {profile.name} profile", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    prepare(cluster)
    results = []
    for _ in range(kills):
        exp = Experiment(SCENARIO, stack)
        exp.observe(f"profile {profile.name}: {profile.dcs()}")
        results.append(q1_once(stack, cluster, exp))
    return results


def q1_once(stack: Stack, cluster: Cluster, exp: Experiment, k: int = 3) -> ExperimentResult:
    exp.steady_state("one leader, one sync standby, no lag", cluster.healthy_problem)
    old = cluster.leader()
    assert old is not None
    writes = Writes(cluster)
    exp.steady_state("a write through PgBouncer commits within 2 s", lambda: writes.problem(2.0))
    ledger = exp.ledger(writes.ledger, interval_s=0.02)
    try:
        with exp.rto(writes.probe, period=0.1, probe_timeout=2.0, k=k), ledger:
            time.sleep(1.0)  # writes flowing before the fault
            with faults.kill(stack.service(old), journal=exp.journal, restart=False):
                exp.await_recovery(RECOVER_TIMEOUT_S)
                # Never start the old primary while its leader key lives: it would lead again.
                wait_until("a new leader", lambda: None if cluster.leader() not in (None, old) else "none yet", 60.0)
                time.sleep(1.0)  # writes keep flowing on the new leader
    finally:
        writes.close()
    seen = "; ".join(f"{n} x {text}" for text, n in sorted(writes.errors.items(), key=lambda e: -e[1]))
    exp.observe(f"failed writes: {seen or 'none'}")
    new = cluster.leader()
    exp.observe(f"killed leader {old}; new leader {new}")
    exp.verify("a new leader", lambda: None if new not in (None, old) else f"leader is {new}")
    exp.action(f"start {old} again", stack.service(old).docker.start)
    rejoin = wait_until(f"{old} rejoins as a replica", cluster.healthy_problem, REJOIN_TIMEOUT_S)
    exp.observe(f"{old} rejoined as {cluster.topology()[old]['role']} and caught up in {rejoin:.1f}s")
    with stack.postgres(old, superuser=True) as conn:
        on_old = {row[0] for row in conn.execute("SELECT id FROM drill_ledger")}
    surviving = read_back(cluster, exp)
    report = exp.reconcile(surviving)
    exp.verify("no acknowledged write lost", lambda: f"lost {list(report.lost)}" if report.lost else None)
    exp.verify(
        f"{old} holds every surviving write",
        lambda: None if on_old >= set(surviving) else f"{len(set(surviving) - on_old)} writes missing on {old}",
    )
    return exp.finish()
