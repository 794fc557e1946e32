"""The Patroni cluster of design doc 004 (stacks/patroni): it boots on 2 cores, every rule of its
policy holds on it, each cluster rule fails on a deliberately broken cluster, and one run of each
drill (tuned Patroni profile): Q1 with the leader SIGKILLed and with it frozen meets Tier 1 (RTO
< 30 s, no acknowledged write lost, the old primary back as a replica), Q1 with asynchronous
replication fails naming the lost ids; Q3 (the leader partitioned from etcd) demotes it within
ttl with no write acknowledged by two primaries, and with broken fencing detects split brain."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackcheck import resources
from stackcheck.chaos.scenarios import load_hook
from stackcheck.chaos.spec import Hook
from stackcheck.compliance import runner
from stackcheck.compliance.model import Area, Outcome, Result
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import Stack
from stackcheck.stackfile import parse
from stackcheck.target import HttpTarget

pytestmark = [pytest.mark.docker, pytest.mark.exclusive("drills measure RTO in seconds")]

CLUSTER = resources.stacks_dir() / "patroni" / "stack.toml"
CLUSTER_RULES = {
    "pg-tls13-only", "pg-hostnossl-reject", "pg-hba-scram", "patroni-rest-auth", "etcd-isolated-from-app",
    "pg-sync-standby",
}  # fmt: skip
# Rules of the default policy that the cluster's policy points at its members, and the containers'.
MEMBER_RULES = {"tls-postgres", "pg-scram", "pg-no-trust", "pg-ssl", "pg-app-not-superuser", "pg-stat-statements"}
BOOT_BOUND_S = 120.0  # measured 2026-12-01 on 2 cores: see the README's cluster table
MEMORY_BOUND_MB = 1500.0


def _hooks(name: str = "q1_series") -> Any:
    """A function of hooks.py, loaded as the chaos runner loads a scenario's hook."""
    return load_hook(Hook(CLUSTER.parent / "hooks.py", name))


def _q1_series() -> Any:
    return _hooks("q1_series")


def _hooks_module() -> Any:
    return sys.modules[_hooks().__module__]


def _routing_logs(stack: Stack) -> str:
    return "".join(f"\n--- {name}:\n{stack.service(name).logs(40)}" for name in ("haproxy", "pgbouncer"))


def _evaluate(stack: Stack) -> list[Result]:
    policy = runner.scoped_policy(stack.spec, None)
    ctx = CheckContext(HttpTarget("http://127.0.0.1:9", booted=True), stack, policy)
    wanted = CLUSTER_RULES | MEMBER_RULES
    results = [r for rule in policy.rules.values() if rule.id in wanted for r in runner.evaluate(rule, ctx)]
    results += runner.run(ctx, [Area.CONTAINERS])
    print("\n" + runner.table(results))
    return results


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    with Stack.from_file(CLUSTER) as stack:
        yield stack


def test_the_cluster_boots_within_bounds_and_its_memory_is_measured(cluster: Stack) -> None:
    assert cluster.boot_seconds is not None
    memory = {}
    for handle in cluster.handles():
        handle.docker.reload()
        stats = handle.docker.stats(stream=False)
        memory[handle.name] = stats["memory_stats"]["usage"] / 1e6
        assert handle.docker.attrs["Config"]["User"] not in ("", "0", "root"), f"{handle.name} runs as root"
    total = sum(memory.values())
    print(
        f"\nboot {cluster.boot_seconds:.1f}s; memory {total:.0f} MB: "
        + ", ".join(f"{n} {m:.0f}" for n, m in memory.items())
    )
    assert cluster.boot_seconds < BOOT_BOUND_S
    assert total < MEMORY_BOUND_MB


def test_every_rule_of_the_clusters_policy_holds(cluster: Stack) -> None:
    results = _evaluate(cluster)
    assert {r.rule.id for r in results} >= CLUSTER_RULES | MEMBER_RULES
    # The policy's own scope decisions (the Ollama rules on a stack without Ollama) are not verdicts.
    out_of_scope = runner.out_of_image_scope(runner.scoped_policy(cluster.spec, None), cluster.spec)
    bad = [r for r in results if r.outcome is not Outcome.PASS and r.rule.id not in out_of_scope]
    assert not bad, runner.table(bad)


def _assert_tier_1(result: Any, cluster: Stack) -> None:
    """Tier 1 of doc 004: the drill passed, RTO under 30 s, no acknowledged write lost."""
    print("\n" + result.summary())
    assert result.passed, result.summary() + _routing_logs(cluster)
    assert result.rto is not None
    assert result.rto.rto_s is not None
    assert result.rto.rto_s < 30
    assert result.rpo is not None
    assert result.rpo.lost == ()


@pytest.mark.drill
def test_q1_primary_failure_with_the_tuned_profile_meets_tier_1(cluster: Stack) -> None:
    try:
        [result] = _q1_series()(cluster, kills=1)  # the tuned profile (patroni.yml's) is the default
    except Exception:
        print(_routing_logs(cluster))
        raise
    _assert_tier_1(result, cluster)
    # The ledger wrote through the drill: 1 s before the kill and 1 s after recovery at 20 ms
    # (about 45 each); 84-102 acknowledged in 9 measured runs.
    assert result.rpo.acknowledged > 50


@pytest.mark.drill
@pytest.mark.intermittent(
    "1 of 3 clean-clone CIs (2026-12-03): not in steady state before the fault, both replicas 'running'"
    " (not streaming) at lag 23200 after the 30 s settle; the drill itself passed in the others"
)
def test_q1_frozen_leader_is_replaced_and_demotes_when_thawed(cluster: Stack) -> None:
    """Was intermittent (2 of 5 runs: the thawed leader led again) until the patroni image got
    upstream's compare-and-swap leader-key write (stacks/images/patroni/patroni-backports.py)."""
    hooks = _hooks_module()
    [result] = hooks.q1_series(cluster, kills=1, variant=hooks.Variant.FREEZE)
    _assert_tier_1(result, cluster)
    assert any(o.startswith("thawed patroni-") and "no writable primary" in o for o in result.observations)


@pytest.mark.drill
def test_q1_with_asynchronous_replication_reports_the_lost_acknowledged_writes(cluster: Stack) -> None:
    """The failing variant: synchronous_mode off (PATCH /config) and the replicas' replication
    connections cut for the last second before the kill: the leader acknowledged writes no replica
    had, the drill names them by id and breaches Tier 1's RPO 0."""
    hooks = _hooks_module()
    [result] = hooks.q1_series(cluster, hooks.TUNED_ASYNC, kills=1)
    print("\n" + result.summary())
    assert not result.passed
    assert result.rpo is not None
    lost = result.rpo.lost
    assert lost, result.summary()
    assert any(b.startswith("RPO ") and b.endswith("> objective 0s") for b in result.breaches), result.breaches
    assert f"no acknowledged write lost: {len(lost)} acknowledged writes lost, ids {list(lost)}" in result.breaches


@pytest.mark.drill
def test_q3_partitioned_leader_demotes_within_ttl_and_no_write_is_acknowledged_twice(cluster: Stack) -> None:
    hooks = _hooks_module()
    result = hooks.q3_series(cluster)
    print("\n" + result.summary())
    assert result.passed, result.summary() + _routing_logs(cluster)
    assert result.rpo is not None
    assert result.rpo.lost == ()
    assert any("s after the partition" in o and "no writable primary" in o for o in result.observations)


@pytest.mark.drill
def test_q3_with_broken_fencing_detects_split_brain(cluster: Stack) -> None:
    """The failing variant: the partitioned leader's Patroni agent frozen (no watchdog to fence
    PostgreSQL) and asynchronous replication: a client that still reaches the old leader has its
    writes acknowledged there while the new leader acknowledges the application's."""
    hooks = _hooks_module()
    result = hooks.q3_series(cluster, hooks.TUNED_ASYNC, fencing_broken=True)
    print("\n" + result.summary())
    assert not result.passed
    assert any(b.startswith("no write acknowledged by two primaries: split brain: ") for b in result.breaches), (
        result.summary()
    )
    assert any("demotes within ttl" in b for b in result.breaches), result.breaches


# -- the broken cluster: each cluster rule fails on it ---------------------------------------------


def _broken_cluster(tmp_path: Path) -> Any:
    """One etcd member that is also on the app network; two Patroni members whose TLS allows 1.2,
    whose pg_hba lets plain TCP in with md5, whose REST API is open, with synchronous mode off."""
    data = tomllib.loads(CLUSTER.read_text())
    yml = (CLUSTER.parent / "patroni.yml").read_text()
    for old, new in (
        ("ssl_min_protocol_version: TLSv1.3", "ssl_min_protocol_version: TLSv1.2"),
        ("synchronous_mode: true", "synchronous_mode: false"),
        ("    - hostnossl all all all reject", "    - host all all all md5"),
        ("hosts: etcd-1:2379,etcd-2:2379,etcd-3:2379", "hosts: etcd-1:2379"),
    ):
        assert old in yml, f"patroni.yml no longer has {old!r}"
        yml = yml.replace(old, new)
    (tmp_path / "patroni.yml").write_text(yml)
    services = data["services"]
    etcd = services["etcd-1"]
    etcd["networks"] = {"coord": [], "app": []}
    etcd["env"]["ETCD_INITIAL_CLUSTER"] = "etcd-1=http://etcd-1:2380"
    members = {name: services[name] for name in ("patroni-1", "patroni-2")}
    for svc in members.values():
        svc["env"]["PATRONI_RESTAPI_PASSWORD"] = ""
        svc["env"]["PATRONI_RESTAPI_OPEN"] = "yes"
    members["patroni-1"]["depends_on"] = ["etcd-1"]
    data["services"] = {"etcd-1": etcd, **members}
    for key in ("links", "scenarios", "objectives"):
        data.pop(key, None)
    data["stack"] = {"name": "patroni-broken"}
    return parse(data, tmp_path / "stack.toml")


def test_each_cluster_rule_fails_on_a_broken_cluster(tmp_path: Path) -> None:
    with Stack(_broken_cluster(tmp_path)) as stack:
        results = _evaluate(stack)
    failed = {r.rule.id for r in results if r.outcome is Outcome.FAIL}
    assert failed & (CLUSTER_RULES | MEMBER_RULES) == CLUSTER_RULES, runner.table(results)
    evidence = {r.rule.id: r.evidence for r in results if r.outcome is Outcome.FAIL}
    assert "TLSv1.2 accepted (must be refused)" in evidence["pg-tls13-only"]
    assert "sslmode=disable) succeeded" in evidence["pg-hostnossl-reject"]
    assert "md5" in evidence["pg-hba-scram"]
    assert "unauthenticated POST /reload answered 202" in evidence["patroni-rest-auth"]
    assert "reachable from the app network" in evidence["etcd-isolated-from-app"]
    assert "0 synchronous standby streaming" in evidence["pg-sync-standby"]
