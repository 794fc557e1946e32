"""PostgreSQL cluster rules (design doc 004): TLS 1.3 only, plain TCP rejected, scram everywhere,
Patroni's REST API authenticated, etcd unreachable from the application network, and synchronous
replication actually on.

Members are picked by image name (policy ``images``) and reached as the datastore rules reach
PostgreSQL (``Stack.postgres``, credentials from the service's env); every verdict is observed on
the running cluster: a handshake, a login, an HTTP answer, a TCP connect, a replication row.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import docker.errors
import httpx
import psycopg
from sslyze.connection_helpers.opportunistic_tls_helpers import ProtocolWithOpportunisticTlsEnum

from stackcheck.compliance import tls
from stackcheck.compliance.datastores import image_instances
from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.stack import RUN_LABEL, ServiceHandle, Stack

# Auth methods that are not a password-sniffing or replay risk on a TCP line.
SAFE_TCP_METHODS = {"scram-sha-256", "reject", "cert"}


def _result(rule: Rule, subject: str, problem: str | None, evidence: str) -> Result:
    return Result(rule, Outcome.FAIL if problem else Outcome.PASS, subject, problem or evidence)


def _superuser_rows(stack: Stack, handle: ServiceHandle, sql: str) -> list[tuple[Any, ...]]:
    with stack.postgres(handle.name, superuser=True) as conn:
        return conn.execute(sql).fetchall()


# -- TLS 1.3 only --------------------------------------------------------------------------------


@check("pg-tls13-only")
def pg_tls13_only(rule: Rule, ctx: CheckContext) -> list[Result]:
    _, handles = image_instances(rule, ctx)
    accepted = rule.param("accepted")
    refused = [p for p in tls.PROTOCOL_NAMES if p not in accepted]
    out = []
    for handle in handles:
        endpoint = tls.Endpoint(
            handle.name,
            handle.port(5432),
            "127.0.0.1",
            starttls=ProtocolWithOpportunisticTlsEnum.POSTGRES,
            label=f"{handle.name}:5432",
        )
        # The same memoised STARTTLS scan tls-postgres uses: one scan per member per run.
        scan = tls._scan(ctx, endpoint, tls.STARTTLS_COMMANDS)
        problem = tls.connectivity_error(scan)
        if problem:
            out.append(_result(rule, endpoint.subject, f"no TLS via STARTTLS: {problem}", ""))
            continue
        problems, evidence = tls.protocol_verdict(tls.supported_protocols(scan), refused, accepted)
        out.append(
            _result(rule, endpoint.subject, f"{'; '.join(problems)} ({evidence})" if problems else None, evidence)
        )
    return out


# -- pg_hba: plain TCP rejected, scram everywhere -------------------------------------------------


@dataclass(frozen=True)
class HbaLine:
    line: int
    type: str  # local, host, hostssl, hostnossl, hostgssenc, hostnogssenc
    databases: tuple[str, ...]
    users: tuple[str, ...]
    address: str | None
    method: str

    @property
    def matches_everyone(self) -> bool:
        return self.databases == ("all",) and self.users == ("all",) and self.address in ("all", "0.0.0.0", None)

    def describe(self) -> str:
        addr = f" {self.address}" if self.address else ""
        return f"line {self.line}: {self.type} {','.join(self.databases)} {','.join(self.users)}{addr} {self.method}"


def hba_lines(stack: Stack, handle: ServiceHandle) -> list[HbaLine]:
    rows = _superuser_rows(
        stack,
        handle,
        "SELECT line_number, type, database, user_name, address, auth_method, error FROM pg_hba_file_rules "
        "ORDER BY line_number",
    )
    return [HbaLine(n, t, tuple(d or ()), tuple(u or ()), a, m) for n, t, d, u, a, m, err in rows if err is None]


def nossl_verdict(lines: Sequence[HbaLine]) -> str | None:
    """Why plain (non-TLS) TCP may log in, or None: a `host` line (TLS optional) or a
    `hostnossl` line that does not reject comes first, or no `hostnossl all all … reject` exists."""
    for line in lines:
        if line.type == "host" and line.method != "reject":
            return f"{line.describe()} accepts TCP without TLS"
        if line.type == "hostnossl":
            if line.method != "reject":
                return f"{line.describe()} accepts TCP without TLS"
            if line.matches_everyone:
                return None
    return "no `hostnossl all all 0.0.0.0/0 reject` line: plain TCP is refused only by the absence of a rule"


def plain_login_refused(stack: Stack, handle: ServiceHandle) -> str | None:
    """A login with sslmode=disable and the right password; None when refused, else what happened."""
    env = {k: stack.render(v) for k, v in handle.service.env.items()}
    try:
        conn = psycopg.connect(
            host="127.0.0.1",
            port=handle.port(5432),
            user="postgres",
            password=env["POSTGRES_PASSWORD"],
            dbname="postgres",
            sslmode="disable",
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        if "no encryption" in str(exc) or "rejects connection" in str(exc) or "no pg_hba.conf entry" in str(exc):
            return None
        raise
    conn.close()
    return "a superuser login without TLS (sslmode=disable) succeeded"


@check("pg-hostnossl-reject")
def pg_hostnossl_reject(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        lines = hba_lines(stack, handle)
        problem = plain_login_refused(stack, handle) or nossl_verdict(lines)
        reject = next(line for line in lines if line.type == "hostnossl") if not problem else None
        evidence = f"a login with sslmode=disable is refused; {reject.describe() if reject else ''}".strip("; ")
        out.append(_result(rule, handle.name, problem, evidence))
    return out


def scram_verdict(lines: Iterable[HbaLine], weak_roles: Sequence[str]) -> str | None:
    weak = [line.describe() for line in lines if line.type != "local" and line.method not in SAFE_TCP_METHODS]
    problems = []
    if weak:
        problems.append(f"TCP lines without scram-sha-256: {'; '.join(weak)}")
    if weak_roles:
        problems.append(f"roles whose password is not a SCRAM verifier: {', '.join(weak_roles)}")
    return "; ".join(problems) or None


@check("pg-hba-scram")
def pg_hba_scram(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        lines = hba_lines(stack, handle)
        rows = _superuser_rows(
            stack,
            handle,
            "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%' "
            "ORDER BY rolname",
        )
        tcp = [line for line in lines if line.type != "local"]
        evidence = f"{len(tcp)} TCP lines, each scram-sha-256 or reject; every stored password is a SCRAM verifier"
        out.append(_result(rule, handle.name, scram_verdict(lines, [r[0] for r in rows]), evidence))
    return out


# -- Patroni's REST API ---------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def rest_verdict(anonymous: int, wrong: int, right: int) -> str | None:
    """Answers to the same unsafe request without, with wrong and with the right credentials."""
    if anonymous != 401:
        return f"an unauthenticated POST /reload answered {anonymous} (must be 401)"
    if wrong != 401:
        return f"a POST /reload with a wrong password answered {wrong} (must be 401)"
    if right in (401, 403):
        return f"the configured credentials are refused ({right}): the check cannot tell auth from breakage"
    return None


@check("patroni-rest-auth")
def patroni_rest_auth(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    port = int(rule.param("port"))
    out = []
    for handle in handles:
        env = {k: stack.render(v) for k, v in handle.service.env.items()}
        user, password = env.get("PATRONI_RESTAPI_USERNAME", "patroni"), env.get("PATRONI_RESTAPI_PASSWORD", "")
        url = f"http://127.0.0.1:{handle.port(port)}/reload"
        # POST /reload is unsafe (auth-protected) but harmless: Patroni re-reads its config.
        with httpx.Client(timeout=5) as client:
            anonymous = client.post(url).status_code
            wrong = client.post(url, headers=_basic(user, password + "-wrong")).status_code
            right = client.post(url, headers=_basic(user, password)).status_code
        evidence = f"POST /reload: anonymous {anonymous}, wrong password {wrong}, configured credentials {right}"
        problem = rest_verdict(anonymous, wrong, right)
        out.append(_result(rule, f"{handle.name}:{port}", f"{problem} ({evidence})" if problem else None, evidence))
    return out


# -- etcd unreachable from the application network -----------------------------------------------


@dataclass(frozen=True)
class Probe:
    target: str  # ip:port or a name
    reachable: bool


def probe_script(names: Iterable[str], addresses: Iterable[str], ports: Iterable[int]) -> str:
    """A bash script printing `OPEN|CLOSED ip:port` per TCP target and `RESOLVES|UNKNOWN name` per name.

    The probes run side by side: an address the network cannot reach costs its whole 2 s timeout,
    and one after another they added up to 8 s per member."""
    lines = ["set +e"]
    for name in names:
        q = shlex.quote(name)
        lines.append(f"(getent hosts {q} >/dev/null && echo RESOLVES {q} || echo UNKNOWN {q}) &")
    for address in addresses:
        for port in ports:
            t = shlex.quote(f"{address}:{port}")
            lines.append(
                f"(timeout 2 bash -c '</dev/tcp/{address}/{port}' 2>/dev/null && echo OPEN {t} || echo CLOSED {t}) &"
            )
    lines.append("wait")
    return "\n".join(lines)


def parse_probe(output: str) -> list[Probe]:
    probes = []
    for line in output.splitlines():
        word, _, target = line.strip().partition(" ")
        if word in ("OPEN", "RESOLVES", "CLOSED", "UNKNOWN"):
            probes.append(Probe(target, word in ("OPEN", "RESOLVES")))
    return probes


def run_probe(stack: Stack, network: str, image: str, script: str) -> str:
    """Run ``script`` in a short-lived container attached to ``network`` only; removed whatever happens."""
    client = stack.docker_network(network).client
    container = client.containers.create(
        image,
        entrypoint=["bash", "-c", script],
        network=stack.network_name(network),
        labels={RUN_LABEL: stack.run_id},
        cap_drop=["ALL"],
    )
    try:
        container.start()
        container.wait(timeout=120)
        return str(container.logs().decode(errors="replace"))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@check("etcd-isolated-from-app")
def etcd_isolated_from_app(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    network = rule.param("app_network")
    if network not in stack.spec.networks:
        raise not_applicable(
            rule, f"the stack has no network {network!r}", f"name the applications' network in {rule.id}.app_network"
        )
    ports = [int(p) for p in rule.param("ports")]
    out = []
    for handle in handles:
        handle.docker.reload()  # fresh addresses: a member may have been restarted
        attached = handle.docker.attrs["NetworkSettings"]["Networks"]
        addresses = sorted({n["IPAddress"] for n in attached.values() if n.get("IPAddress")})
        names = [handle.name, *(a for aliases in handle.service.networks.values() for a in aliases)]
        output = run_probe(stack, network, handle.container.image, probe_script(names, addresses, ports))
        probes = parse_probe(output)
        if len(probes) != len(names) + len(addresses) * len(ports):
            raise RuntimeError(f"the probe container printed {output!r}")
        open_ = [p.target for p in probes if p.reachable]
        evidence = (
            f"from a container on {network}: {', '.join(names)} unknown, "
            f"{', '.join(f'{a}:{p}' for a in addresses for p in ports)} closed"
        )
        problem = f"reachable from the {network} network: {', '.join(open_)}" if open_ else None
        out.append(_result(rule, handle.name, problem, evidence))
    return out


# -- synchronous replication ------------------------------------------------------------------------


def sync_verdict(rows: Sequence[tuple[str, str, str]], synchronous_commit: str, min_sync: int) -> str | None:
    """``rows``: (application_name, state, sync_state) of pg_stat_replication on the primary."""
    sync = [name for name, state, sync_state in rows if sync_state in ("sync", "quorum") and state == "streaming"]
    if len(sync) < min_sync:
        seen = ", ".join(f"{n} {st}/{ss}" for n, st, ss in rows) or "no standby connected"
        return f"{len(sync)} synchronous standby streaming (need {min_sync}): {seen}"
    if synchronous_commit in ("off", "local"):
        return f"synchronous_commit = {synchronous_commit}: commits do not wait for the standby"
    return None


@check("pg-sync-standby")
def pg_sync_standby(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    min_sync = int(rule.param("min_sync"))
    primaries = []
    for handle in handles:
        with stack.postgres(handle.name, superuser=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is None or row[0]:
                continue
            rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
            commit_row = conn.execute("SHOW synchronous_commit").fetchone()
            primaries.append((handle, rows, str(commit_row[0]) if commit_row else ""))
    if len(primaries) != 1:
        names = ", ".join(h.name for h, _, _ in primaries) or "none"
        return [_result(rule, "cluster", f"{len(primaries)} members are primaries ({names}), expected exactly 1", "")]
    handle, rows, commit = primaries[0]
    evidence = f"pg_stat_replication: {', '.join(f'{n} {ss}' for n, _, ss in rows)}; synchronous_commit = {commit}"
    problem = sync_verdict(rows, commit, min_sync)
    return [_result(rule, handle.name, f"{problem} ({evidence})" if problem else None, evidence)]
