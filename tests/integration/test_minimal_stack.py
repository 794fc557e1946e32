"""Compliance works on any stack and against a running deployment.

A team's smallest stack (one nginx service with TLS, no depends_on, no data stores, no links,
the default policy: data/minimal/) gets `stackcheck check compliance` to a verdict within a
minute: every rule that applies is judged with evidence, the rest are NOT EVALUATED with "not
applicable: ..." (never an empty pass, never a wait for upstreams that do not exist).

A running deployment, addressed only by its published URL (`--target`), gets the HTTP/TLS
rules, rate limits and liveness; container and data-store rules are DISABLED as out of scope
and nothing container-level runs: no container of it is stopped, restarted or inspected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from stackcheck import resources
from stackcheck.compliance import runner
from stackcheck.compliance.model import Area, Outcome, Policy
from stackcheck.stack import DEFAULT_STACK, Stack
from stackcheck.target import HttpTarget

pytestmark = [pytest.mark.docker, pytest.mark.compliance]

MINIMAL = Path(__file__).parent / "data" / "minimal" / "stack.toml"
BOUND_S = 60.0  # the functional bound for a minimal stack's run, boot included
OUTCOMES = {o.value for o in Outcome}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )


def table_rows(out: str) -> list[tuple[str, str, str]]:
    """(rule, outcome, rest of the line) of each row of the printed results table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rule ") and "evidence" in line)
    rows = []
    for line in lines[start + 1 :]:
        words = line.split(maxsplit=3)
        if len(words) < 4 or words[2] not in OUTCOMES:
            break
        rows.append((words[0], words[2], words[3]))
    return rows


def test_a_minimal_stack_gets_a_verdict_on_every_rule_within_a_minute(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = cli("check", "compliance", "--stack", str(MINIMAL), cwd=tmp_path)
    seconds = time.monotonic() - started
    print(f"\nstackcheck check compliance on {MINIMAL.name} (minimal): {seconds:.1f}s, exit {proc.returncode}")
    print(proc.stdout[-6000:])
    assert seconds < BOUND_S, f"took {seconds:.1f}s (bound {BOUND_S:g}s)"
    rows = table_rows(proc.stdout)
    assert {rule for rule, _, _ in rows} == set(Policy.load().rules), "every rule of the policy has a result"
    for rule, outcome, rest in rows:
        if outcome == "not_evaluated":
            assert "not applicable: " in rest, f"{rule}: NOT EVALUATED without a not-applicable reason: {rest}"
            assert f'[disabled] {rule} = "reason"' in rest, f"{rule}: does not say how to disable it: {rest}"
        elif outcome == "disabled":  # only the policy's own image scope (only_with_images) disables here
            assert "not applicable: no service runs an image in" in rest, f"{rule}: disabled: {rest}"
            assert "only_with_images" in rest, f"{rule}: disabled without saying by what: {rest}"
        else:
            assert outcome in ("pass", "fail"), f"{rule}: {outcome} {rest}"
            assert len(rest.split()) > 1, f"{rule}: {outcome} without evidence"
    judged = {rule for rule, outcome, _ in rows if outcome in ("pass", "fail")}
    # What applies to one TLS web server is judged: headers, TLS and its redirect, its container.
    assert {"headers-hsts", "headers-grade", "tls-protocols", "tls-http-redirect", "containers-non-root"} <= judged
    not_applicable = {rule for rule, outcome, _ in rows if outcome == "not_evaluated"}
    assert {"pg-ssl", "redis-auth-required", "tls-postgres", "ratelimit-api", "health-liveness"} <= not_applicable
    assert "error 502: not applicable: the entrypoint has no upstream service" in proc.stdout
    assert proc.returncode == 1, "NOT EVALUATED rules at or above the gate fail it unless disabled by name"


def test_a_minimal_stack_with_the_inapplicable_rules_disabled_passes(tmp_path: Path) -> None:
    """The reasons say how to switch a rule off: done in the stack file, the gate is green."""
    rules = Policy.load().area(Area.HEALTH) + Policy.load().area(Area.DATASTORES)
    disabled = "\n".join(f'{r.id} = "a web server without data stores or a health route"' for r in rules)
    mine = tmp_path / "stack.toml"
    mine.write_text(MINIMAL.read_text() + f"\n[disabled]\n{disabled}\n")
    (tmp_path / "nginx.conf").write_text((MINIMAL.parent / "nginx.conf").read_text())
    proc = cli("check", "compliance", "--stack", str(mine), "--area", "health", "--area", "datastores", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = table_rows(proc.stdout)
    assert {(rule, outcome) for rule, outcome, _ in rows} == {(r.id, "disabled") for r in rules}


def started_at(client: docker.DockerClient, stack: Stack) -> dict[str, str]:
    """When each container of the stack last started, read fresh from the engine."""
    return {h.name: client.containers.get(h.docker.id).attrs["State"]["StartedAt"] for h in stack.handles()}


def test_an_external_target_gets_http_tls_rate_limit_and_liveness_rules_and_nothing_else(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The reference stack booted here, then judged by `pytest --target URL` as a deployment
    elsewhere would be: its policy from --stack, its plain-HTTP URL from --target-http-url."""
    with Stack.from_file(DEFAULT_STACK) as stack:
        target = stack.target()
        http_url = stack.url("nginx", 8080, scheme="http")
        before = started_at(docker_client, stack)
        report = tmp_path / "run"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-c",
                str(resources.package_dir("stackcheck.suites") / "gate.ini"),
                "--target",
                target.base_url,
                "--target-ca",
                str(target.ca_file),
                "--target-http-url",
                http_url,
                "--stack",
                str(DEFAULT_STACK),
                "-m",
                "compliance",
                "-k",
                "test_rule",
                "--report-dir",
                str(report),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
        after = started_at(docker_client, stack)
    print(proc.stdout[:3000], proc.stdout[-3000:], proc.stderr[-2000:])
    assert before == after, "a container was stopped or restarted: a container-level check ran"
    checks = {c["check"]: c for c in json.loads((report / "results.json").read_text())["checks"]}
    policy = runner.scoped_policy(None, DEFAULT_STACK.parent / "policy.toml", HttpTarget.external(target.base_url))
    reason = f"not applicable: --target {target.base_url} is an external deployment (nothing booted)"
    for rule in policy.rules.values():
        status, why = checks[rule.id]["status"], checks[rule.id]["reason"]
        if runner.needs_stack(rule):
            assert (status, why) == ("disabled", reason), rule.id
        else:
            assert status == "passed", f"{rule.id}: {status} {why}"
    assert {r.area for r in policy.rules.values() if checks[r.id]["status"] == "passed"} == {
        Area.HEADERS,
        Area.TLS,
        Area.RATE_LIMITS,
        Area.HEALTH,
    }
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_check_compliance_against_a_target_url_disables_what_needs_a_booted_stack(tmp_path: Path) -> None:
    """The CLI's --target path: a stack booted here, addressed only by its published URLs."""
    with Stack.from_file(MINIMAL) as stack:
        target, http_url = stack.target(), stack.url("web", 8080, scheme="http")
        args = ["--target", target.base_url, "--target-ca", str(target.ca_file), "--target-http-url", http_url]
        proc = cli("check", "compliance", *args, "--area", "tls", "--area", "containers", cwd=tmp_path)
    print(proc.stdout[-3000:])
    rows = {(rule, outcome, rest) for rule, outcome, rest in table_rows(proc.stdout)}
    reason = f"not applicable: --target {target.base_url} is an external deployment (nothing booted)"
    disabled = {rule for rule, outcome, rest in rows if outcome == "disabled" and rest.endswith(reason)}
    assert disabled == {r.id for r in Policy.load().area(Area.CONTAINERS)} | {"tls-postgres"}
    [redirect] = [rest for rule, _, rest in rows if rule == "tls-http-redirect"]
    assert f"GET {http_url}/ answered 301 Location: https://localhost/" in redirect
    judged = {rule for rule, outcome, _ in rows if outcome in ("pass", "fail")}
    assert judged == {r.id for r in Policy.load().area(Area.TLS)} - {"tls-postgres"}
    assert proc.returncode == 0, "only a medium finding (tls-mozilla-profile's curves): a warning"


def test_the_redirect_rule_says_it_tried_port_80_without_a_plain_http_url() -> None:
    target = HttpTarget.external("https://127.0.0.1:9")  # nothing listens on 80 or 9 here
    policy = Policy.load()
    [result] = runner.evaluate(policy.rules["tls-http-redirect"], runner.CheckContext(target, None, policy))
    assert result.outcome is Outcome.FAIL
    assert result.evidence.startswith("GET http://127.0.0.1:80/ got no HTTP answer")
    assert result.evidence.endswith("(no --target-http-url given: tried port 80 of 127.0.0.1)")
