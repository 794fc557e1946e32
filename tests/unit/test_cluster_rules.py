"""The PostgreSQL cluster rules' verdicts on observed data (pg_hba rows, REST answers, probe
output, replication rows), without booting anything; tests/integration/test_patroni.py runs them
on the real cluster and on a broken one. Also: the cluster's stack file and policy parse, and the
rules are not applicable (with the reason) where a stack has no cluster."""

from __future__ import annotations

import dataclasses

import pytest

from stackcheck import resources, stackfile
from stackcheck.compliance import runner
from stackcheck.compliance.cluster import (
    HbaLine,
    nossl_verdict,
    parse_probe,
    probe_script,
    rest_verdict,
    scram_verdict,
    sync_verdict,
)
from stackcheck.compliance.model import Outcome, Policy
from stackcheck.compliance.runner import CheckContext
from stackcheck.target import HttpTarget
from tests.unit.compliance_fakes import FakeStack

CLUSTER = resources.stacks_dir() / "patroni" / "stack.toml"
RULES = ("pg-tls13-only", "pg-hostnossl-reject", "pg-hba-scram", "patroni-rest-auth", "etcd-isolated-from-app",
         "pg-sync-standby")  # fmt: skip


def hba(line: int, type_: str, method: str, db: str = "all", user: str = "all", addr: str | None = "all") -> HbaLine:
    return HbaLine(line, type_, (db,), (user,), None if type_ == "local" else addr, method)


# The cluster's own pg_hba (stacks/patroni/patroni.yml).
GOOD = [
    hba(1, "local", "peer"),
    hba(2, "hostssl", "scram-sha-256", db="replication", user="replicator"),
    hba(3, "hostssl", "scram-sha-256"),
    hba(4, "hostnossl", "reject"),
]


def test_the_clusters_pg_hba_rejects_plain_tcp_and_uses_scram() -> None:
    assert nossl_verdict(GOOD) is None
    assert scram_verdict(GOOD, []) is None


def test_a_host_line_before_the_reject_lets_plain_tcp_in() -> None:
    lines = [GOOD[0], hba(2, "host", "scram-sha-256"), *GOOD[1:]]
    assert nossl_verdict(lines) == "line 2: host all all all scram-sha-256 accepts TCP without TLS"


def test_no_explicit_reject_is_a_failure_even_when_only_hostssl_lines_exist() -> None:
    problem = nossl_verdict(GOOD[:3])
    assert problem is not None
    assert "no `hostnossl all all 0.0.0.0/0 reject` line" in problem


def test_a_reject_for_one_database_only_is_not_the_catch_all() -> None:
    problem = nossl_verdict([*GOOD[:3], hba(4, "hostnossl", "reject", db="app")])
    assert problem is not None
    assert "no `hostnossl" in problem


def test_md5_lines_and_md5_passwords_fail_scram() -> None:
    lines = [*GOOD, hba(5, "hostssl", "md5", user="legacy"), hba(6, "local", "trust")]
    problem = scram_verdict(lines, ["legacy"])
    assert problem == (
        "TCP lines without scram-sha-256: line 5: hostssl all legacy all md5; "
        "roles whose password is not a SCRAM verifier: legacy"
    )


def test_rest_auth_needs_401_without_and_with_a_wrong_password_and_acceptance_with_the_right_one() -> None:
    assert rest_verdict(401, 401, 202) is None
    assert rest_verdict(202, 202, 202) == "an unauthenticated POST /reload answered 202 (must be 401)"
    assert rest_verdict(401, 202, 202) == "a POST /reload with a wrong password answered 202 (must be 401)"
    assert "cannot tell auth from breakage" in str(rest_verdict(401, 401, 401))


def test_the_probe_script_and_its_output() -> None:
    script = probe_script(["etcd-1"], ["172.20.0.2"], [2379, 2380])
    assert "getent hosts etcd-1" in script
    assert "/dev/tcp/172.20.0.2/2380" in script
    assert script.splitlines()[-1] == "wait"  # the probes run side by side, each bounded by its timeout
    output = "UNKNOWN etcd-1\nOPEN 172.20.0.2:2379\nCLOSED 172.20.0.2:2380\nnoise\n"
    assert [(p.target, p.reachable) for p in parse_probe(output)] == [
        ("etcd-1", False),
        ("172.20.0.2:2379", True),
        ("172.20.0.2:2380", False),
    ]


def test_sync_standby_verdicts() -> None:
    rows = [("patroni-2", "streaming", "sync"), ("patroni-3", "streaming", "async")]
    assert sync_verdict(rows, "on", 1) is None
    assert sync_verdict([("patroni-2", "streaming", "async")], "on", 1) == (
        "0 synchronous standby streaming (need 1): patroni-2 streaming/async"
    )
    assert sync_verdict([], "on", 1) == "0 synchronous standby streaming (need 1): no standby connected"
    assert sync_verdict([("patroni-2", "catchup", "sync")], "on", 1) is not None
    assert sync_verdict(rows, "local", 1) == "synchronous_commit = local: commits do not wait for the standby"


def test_the_cluster_stack_and_its_policy_parse() -> None:
    spec = stackfile.load(CLUSTER)
    assert spec.policy is not None
    policy = Policy.load(spec.policy)
    for rule_id in RULES:
        assert policy.rules[rule_id].enabled
    assert policy.rules["pg-app-not-superuser"].params["images"] == ["patroni"]
    # etcd is on no network the applications (or PgBouncer) are on.
    assert all(set(spec.services[f"etcd-{i}"].networks) == {"coord"} for i in (1, 2, 3))
    assert "coord" not in spec.services["pgbouncer"].networks


@pytest.mark.parametrize("rule_id", RULES)
def test_without_cluster_members_each_rule_is_not_applicable(rule_id: str) -> None:
    policy = Policy.load()
    rule = dataclasses.replace(policy.rules[rule_id])
    target = HttpTarget("http://127.0.0.1:9", booted=True)
    [result] = runner.evaluate(rule, CheckContext(target, FakeStack(containers=[]), policy))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence.startswith("not applicable: no service runs an image in"), result.evidence
    assert f'[disabled] {rule_id} = "reason"' in result.evidence
