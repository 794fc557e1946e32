"""Every compliance rule is shown to fail: each deliberately broken variant of the reference
stack (made through the stack file and config overrides, never by editing a suite) fails
exactly the rules it targets and passes the others of the areas it is checked on. The clean
reference stack passing every rule is the suites' own run (pytest suites)."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from stackcheck.compliance import containers, runner
from stackcheck.compliance.model import Area, Policy, Result
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import DEFAULT_STACK, Stack
from stackcheck.stackfile import parse

pytestmark = [pytest.mark.docker, pytest.mark.compliance]

REFERENCE = tomllib.loads(DEFAULT_STACK.read_text())
NGINX_CONF = (DEFAULT_STACK.parent / "nginx" / "promptcard.conf").read_text()
POLICY = Policy.load()
HSTS = '    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;\n'
NOSNIFF = '    add_header X-Content-Type-Options "nosniff" always;\n'
# The security headers of the seed's nginx (design doc 000), plus what such configs often add.
SEED_HEADERS = """    server_tokens on;
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    add_header X-XSS-Protection "1; mode=block" always;
    add_header Set-Cookie "session=stackcheck; Path=/" always;
    add_header Access-Control-Allow-Origin "*" always;
    add_header Access-Control-Allow-Credentials "true" always;
"""


def edited_conf(*, remove: tuple[str, ...] = (), replace: tuple[tuple[str, str], ...] = ()) -> str:
    conf = NGINX_CONF
    for line in remove:
        assert line in conf, f"the reference nginx config no longer has {line!r}"
        conf = conf.replace(line, "")
    for old, new in replace:
        assert old in conf, f"the reference nginx config no longer has {old!r}"
        conf = conf.replace(old, new)
    return conf


def edge_stack(tmp_path: Path, conf: str = NGINX_CONF, backend: dict[str, Any] | None = None) -> Any:
    """The reference edge, as small as it goes: postgres, one backend and nginx."""
    (tmp_path / "nginx.conf").write_text(conf)
    services = copy.deepcopy(REFERENCE["services"])
    pg = services["postgres-primary"]
    pg["networks"] = {"internal": []}
    pg["ports"] = []
    app = services["backend"]
    app.update(replicas=1, depends_on=["postgres"], env={"DATABASE_URL_FILE": "/run/secrets/database_url"})
    app["files"] = {"/run/secrets/database_url": "postgresql://promptcard:${secret.pg-app}@postgres:5432/promptcard"}
    app.update(backend or {})
    web = services["nginx"]
    web["files"]["/etc/nginx/conf.d/default.conf"] = {"template_file": "nginx.conf"}
    data = {
        "stack": {"name": "edge", "entrypoint": "https://nginx:8443", "health_path": "/api/health"},
        "tls": REFERENCE["tls"],
        "secrets": REFERENCE["secrets"],
        "networks": {"edge": {}, "internal": {"internal": True}},
        "services": {"postgres": pg, "backend": app, "nginx": web},
    }
    return parse(data, tmp_path / "stack.toml")


def store_stack(tmp_path: Path, service: str, overrides: dict[str, Any]) -> Any:
    """One data store of the reference stack, alone, with its settings overridden."""
    svc = copy.deepcopy(REFERENCE["services"][service])
    svc.update(networks={"control": []}, depends_on=[])
    svc["env"] = {k: v for k, v in {**svc.get("env", {}), **overrides}.items() if v is not None}
    data = {
        "stack": {"name": "store"},
        "secrets": REFERENCE["secrets"],
        "networks": {"control": {}},
        "services": {service: svc},
    }
    return parse(data, tmp_path / "stack.toml")


def failing(results: list[Result]) -> set[str]:
    return {r.rule.id for r in results if r.failed}


def evaluate(stack: Stack, *areas: Area, policy: Policy = POLICY) -> list[Result]:
    results = runner.run(
        CheckContext(stack.target() if stack.spec.entrypoint_url else _no_http(), stack, policy), areas
    )
    assert not [r for r in results if r.outcome is runner.Outcome.ERROR], runner.table(results)
    return results


def _no_http() -> Any:
    from stackcheck.target import HttpTarget

    return HttpTarget("http://127.0.0.1:9", booted=True)


def assert_fails_exactly(results: list[Result], expected: set[str]) -> None:
    assert failing(results) == expected, runner.table(r for r in results if r.failed or r.rule.id in expected)
    for result in results:
        if result.failed:
            assert result.evidence, f"{result.rule.id} failed without evidence"


# -- headers ---------------------------------------------------------------------------------


def test_missing_hsts_fails_hsts_and_the_grade(tmp_path: Path) -> None:
    with Stack(edge_stack(tmp_path, edited_conf(remove=(HSTS,)))) as stack:
        results = evaluate(stack, Area.HEADERS)
    assert_fails_exactly(results, {"headers-hsts", "headers-grade"})
    hsts = [r for r in results if r.rule.id == "headers-hsts" and r.failed]
    assert all("Strict-Transport-Security is missing" in r.evidence for r in hsts)


def test_a_header_missing_on_error_pages_only_is_caught_there(tmp_path: Path) -> None:
    conf = edited_conf(replace=((NOSNIFF, NOSNIFF.replace(" always;", ";")),))
    with Stack(edge_stack(tmp_path, conf)) as stack:
        results = evaluate(stack, Area.HEADERS)
    assert_fails_exactly(results, {"headers-nosniff"})
    nosniff = [r for r in results if r.rule.id == "headers-nosniff"]
    assert {r.subject.split()[0] for r in nosniff if r.failed} == {"error"}, "only error responses should fail"
    assert {r.subject.split(" (")[0] for r in nosniff if r.failed} == {"error 404", "error 429", "error 502"}
    assert all(not r.failed for r in nosniff if r.subject.startswith("GET"))


def test_the_seed_headers_are_flagged(tmp_path: Path) -> None:
    start = edited_conf().index("    add_header Strict-Transport-Security")
    end = edited_conf().index('    add_header Referrer-Policy "no-referrer" always;\n') + len(
        '    add_header Referrer-Policy "no-referrer" always;\n'
    )
    conf = NGINX_CONF[:start] + SEED_HEADERS + NGINX_CONF[end:]
    with Stack(edge_stack(tmp_path, conf)) as stack:
        results = evaluate(stack, Area.HEADERS)
    assert_fails_exactly(
        results,
        {
            "headers-csp",
            "headers-referrer-policy",
            "headers-no-version-disclosure",
            "headers-xss-protection",
            "headers-cookies",
            "headers-cors",
            "headers-grade",
        },
    )
    evidence = " ".join(r.evidence for r in results if r.failed)
    for observed in (
        "nginx/",
        "1; mode=block",
        "Content-Security-Policy is missing",
        "lacks Secure, HttpOnly, SameSite",
        "* with credentials",
    ):
        assert observed in evidence


# -- rate limits ------------------------------------------------------------------------------


def test_no_rate_limit_fails_both_zones_and_reports_the_measured_rate(tmp_path: Path) -> None:
    conf = edited_conf(
        remove=("        limit_req zone=auth burst=5 nodelay;\n", "        limit_req zone=api burst=20 nodelay;\n")
    )
    with Stack(edge_stack(tmp_path, conf)) as stack:
        results = evaluate(stack, Area.RATE_LIMITS)
    assert_fails_exactly(results, {"ratelimit-api", "ratelimit-auth"})
    api = next(r for r in results if r.rule.id == "ratelimit-api")
    assert "no request was answered 429" in api.evidence
    assert "limited 0" in api.evidence


def test_the_reference_edge_passes_rate_limits_within_tolerance(tmp_path: Path) -> None:
    """The clean edge measured the same way: the numbers the variants are compared with."""
    with Stack(edge_stack(tmp_path)) as stack:
        results = evaluate(stack, Area.RATE_LIMITS)
    assert_fails_exactly(results, set())


# -- containers -------------------------------------------------------------------------------


def test_backend_running_as_root_fails_non_root_for_the_backend_only(tmp_path: Path) -> None:
    with Stack(edge_stack(tmp_path, backend={"user": "0"})) as stack:
        results = evaluate(stack, Area.CONTAINERS)
    assert_fails_exactly(results, {"containers-non-root"})
    assert [r.subject for r in results if r.failed] == ["backend"]


@pytest.fixture
def unpinned_tag(docker_client: docker.DockerClient, image: Any) -> Iterator[str]:
    """The python runtime image under a `latest` tag, removed afterwards."""
    tag = "stackcheck-variant/toolbox:latest"
    docker_client.images.get(image("python")).tag(tag)
    yield tag
    docker_client.images.remove(tag)


def test_a_careless_container_fails_the_container_rules_it_breaks(tmp_path: Path, unpinned_tag: str) -> None:
    toolbox = {
        "image": unpinned_tag,
        "networks": {"net": []},
        "command": ["python3", "-c", "import time; time.sleep(600)"],
        "ready": "running",
        "user": "0",
        "cap_add": ["NET_ADMIN"],
        "mounts": ["/var/run/docker.sock:/var/run/docker.sock:ro"],
    }
    spec = parse(
        {"stack": {"name": "careless"}, "networks": {"net": {"internal": True}}, "services": {"toolbox": toolbox}},
        tmp_path / "s.toml",
    )
    with Stack(spec) as stack:
        results = evaluate(stack, Area.CONTAINERS)
    assert_fails_exactly(
        results,
        {
            "containers-non-root",
            "containers-capabilities",
            "containers-no-docker-socket",
            "containers-healthcheck",
            "containers-resource-limits",
            "containers-image-pinned",
        },
    )


def test_privileged_and_public_data_ports_are_caught_on_a_created_container(
    docker_client: docker.DockerClient, image: Any
) -> None:
    """Both rules read the container's configuration (HostConfig), so a created, never started
    container proves them: no port is ever opened beyond loopback, and this sandbox refuses to
    start privileged containers anyway."""
    created = docker_client.containers.create(
        image("postgres"),
        ports={"5432/tcp": ("0.0.0.0", None)},
        privileged=True,
        labels={"org.stackcheck.variant": "1"},
    )
    try:
        created.reload()
        data_ports = set(POLICY.rules["containers-no-public-data-ports"].param("data_ports"))
        assert containers.public_bindings(created.attrs, data_ports) == ["5432/tcp on 0.0.0.0:*"]
        assert containers.privileged_problem(created.attrs) == "runs privileged"
    finally:
        created.remove(force=True)


def test_writable_root_fs_where_required_is_caught(tmp_path: Path) -> None:
    reference_nginx = REFERENCE["services"]["nginx"]
    assert reference_nginx["read_only"] is True
    spec = edge_stack(tmp_path)
    spec = dataclasses.replace(
        spec, services={**spec.services, "nginx": dataclasses.replace(spec.services["nginx"], read_only=False)}
    )
    with Stack(spec) as stack:
        results = evaluate(stack, Area.CONTAINERS)
    assert_fails_exactly(results, {"containers-read-only-rootfs"})


# -- data stores ------------------------------------------------------------------------------


def test_redis_without_password_fails_the_redis_rules(tmp_path: Path) -> None:
    spec = store_stack(
        tmp_path,
        "redis",
        {"REDIS_PASSWORD": None, "REDIS_ADMIN_PASSWORD": None, "REDIS_EXTRA_CONF": "protected-mode no"},
    )
    with Stack(spec) as stack:
        results = evaluate(stack, Area.DATASTORES)
    assert_fails_exactly(results, {"redis-auth-required", "redis-default-user", "redis-dangerous-commands"})


def test_trust_in_pg_hba_fails_only_no_trust(tmp_path: Path) -> None:
    spec = store_stack(tmp_path, "postgres-primary", {"PG_HBA_PREPEND": "host all all all trust"})
    with Stack(spec) as stack:
        results = evaluate(stack, Area.DATASTORES)
    assert_fails_exactly(results, {"pg-no-trust"})
    assert "host all all all" in next(r for r in results if r.failed).evidence


def test_a_weak_postgres_fails_scram_ssl_superuser_and_stat_statements(tmp_path: Path) -> None:
    overrides = {
        "PG_SSL": "off",
        "PG_EXTRA_CONF": "password_encryption = md5\nshared_preload_libraries = ''",
        "POSTGRES_APP_USER": None,
        "POSTGRES_APP_PASSWORD": None,
    }
    with Stack(store_stack(tmp_path, "postgres-primary", overrides)) as stack:
        results = evaluate(stack, Area.DATASTORES)
    assert_fails_exactly(results, {"pg-scram", "pg-ssl", "pg-app-not-superuser", "pg-stat-statements"})


# -- health -----------------------------------------------------------------------------------


def test_health_that_does_not_see_a_cut_link_fails(tmp_path: Path) -> None:
    """A backend that reaches Redis around Toxiproxy: cutting the link changes nothing it reports."""
    data = copy.deepcopy(REFERENCE)
    data["services"]["backend"]["files"]["/run/secrets/redis_url"] = "redis://:${secret.redis}@redis:6379/0"
    policy = dataclasses.replace(POLICY, rules={k: v for k, v in POLICY.rules.items() if k == "health-dependencies"})
    rule = policy.rules["health-dependencies"]
    policy = dataclasses.replace(
        policy, rules={rule.id: dataclasses.replace(rule, params={**rule.params, "detect_s": 4.0})}
    )
    with Stack(parse(data, DEFAULT_STACK)) as stack:
        results = evaluate(stack, Area.HEALTH, policy=policy)
    assert [r.subject for r in results if r.failed] == ["backend->redis"]
    assert "redis still 'healthy' 4s after backend->redis was cut" in next(r for r in results if r.failed).evidence


def test_slow_liveness_fails_against_a_strict_objective(stack: Stack) -> None:
    rule = POLICY.rules["health-liveness"]
    strict = dataclasses.replace(rule, params={**rule.params, "max_p95_ms": 0.01})
    [result] = runner.evaluate(strict, CheckContext(stack.target(), stack, POLICY))
    assert result.failed
    assert "> 0.01 ms" in result.evidence
