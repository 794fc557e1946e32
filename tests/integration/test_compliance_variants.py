"""Every compliance rule is shown to fail: each deliberately broken variant of the reference
stack (made through the stack file and config overrides, never by editing a suite) fails
exactly the rules it targets and passes the others of the areas it is checked on. The clean
reference stack passing every rule is the suites' own run (pytest suites)."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from stackcheck import stackfile
from stackcheck.compliance import runner
from stackcheck.compliance.model import Area, Outcome, Policy, Result, Rule
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import DEFAULT_STACK, ServiceHandle, Stack
from stackcheck.stackfile import ServiceSpec, parse
from tests.unit.compliance_fakes import FakeStack

pytestmark = [pytest.mark.docker, pytest.mark.compliance]

REFERENCE = tomllib.loads(DEFAULT_STACK.read_text())
NGINX_CONF = (DEFAULT_STACK.parent / "nginx" / "promptcard.conf").read_text()
# The reference stack's policy (its routes, rate-limit paths and health links) over the default.
POLICY = Policy.load(stackfile.load(DEFAULT_STACK).policy)
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


def edge_stack(
    tmp_path: Path,
    conf: str = NGINX_CONF,
    backend: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """The reference edge, as small as it goes: postgres, one backend and nginx (plus ``extra`` services)."""
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
        "services": {"postgres": pg, "backend": app, "nginx": web, **(extra or {})},
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


def context(stack: Stack, policy: Policy = POLICY) -> CheckContext:
    return CheckContext(stack.target() if stack.spec.entrypoint_url else _no_http(), stack, policy)


def evaluate(stack: Stack, *areas: Area, policy: Policy = POLICY, ctx: CheckContext | None = None) -> list[Result]:
    results = runner.run(ctx or context(stack, policy), areas)
    assert not [r for r in results if r.outcome is runner.Outcome.ERROR], runner.table(results)
    return results


def with_params(rule_id: str, **params: Any) -> Rule:
    rule = POLICY.rules[rule_id]
    return dataclasses.replace(rule, params={**rule.params, **params})


def only(*rules: Rule) -> Policy:
    """The default policy with just these rules."""
    return dataclasses.replace(POLICY, rules={r.id: r for r in rules})


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


# The header rules that judge each response of the surface (the grade scores the entry route
# with the MDN Observatory algorithm, which counts any frame-ancestors as set: tested on its own).
HEADER_RULES = only(*(r for r in POLICY.area(Area.HEADERS) if r.id != "headers-grade"))
CSP = """    add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;\n"""
FOREIGN = "https://stackcheck-foreign-origin.invalid"


@pytest.mark.parametrize("ancestors", [FOREIGN, "https:"])
def test_frame_ancestors_beyond_none_and_self_fails_frame_options(tmp_path: Path, ancestors: str) -> None:
    """X-Frame-Options DENY stays: browsers ignore it once frame-ancestors is set, so the loose
    list is what counts. Allowing the foreign origin by policy passes it; `https:` never."""
    conf = edited_conf(replace=((CSP, CSP.replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")),))
    allowing = with_params("headers-frame-options", allowed_frame_ancestors=[FOREIGN])
    with Stack(edge_stack(tmp_path, conf)) as stack:
        ctx = context(stack, HEADER_RULES)
        results = evaluate(stack, Area.HEADERS, ctx=ctx)
        # The same responses (the run's cache) judged with the foreign origin allowed.
        allowed = runner.evaluate(allowing, CheckContext(ctx.target, stack, only(allowing), cache=ctx.cache))
    assert_fails_exactly(results, {"headers-frame-options"})
    frame = [r for r in results if r.rule.id == "headers-frame-options"]
    assert frame
    assert all(r.failed for r in frame), runner.table(frame)
    for result in frame:
        assert f"frame-ancestors {ancestors!r} lets {ancestors} frame the page" in result.evidence
        assert "X-Frame-Options ['DENY'] is ignored by browsers when frame-ancestors is set" in result.evidence
    expected = Outcome.PASS if ancestors == FOREIGN else Outcome.FAIL
    assert {r.outcome for r in allowed} == {expected}, runner.table(allowed)


# -- rate limits ------------------------------------------------------------------------------


@pytest.mark.exclusive("measures a rate limiter")
def test_no_rate_limit_fails_both_zones_and_reports_the_measured_rate(tmp_path: Path) -> None:
    conf = edited_conf(
        remove=("        limit_req zone=auth burst=5 nodelay;\n", "        limit_req zone=api burst=20 nodelay;\n")
    )
    with Stack(edge_stack(tmp_path, conf)) as stack:
        policy = only(*HEADER_RULES.rules.values(), *POLICY.area(Area.RATE_LIMITS))
        results = evaluate(stack, Area.RATE_LIMITS, Area.HEADERS, policy=policy)
    assert_fails_exactly(results, {"ratelimit-api", "ratelimit-auth"})
    api = next(r for r in results if r.rule.id == "ratelimit-api")
    assert "no request was answered 429" in api.evidence
    assert "limited 0" in api.evidence
    # No 429 came, so no header rule judged a 200 as the 429 page: each says so instead.
    surface_rules = set(HEADER_RULES.rules) - {"headers-cors"}
    page = [r for r in results if r.subject.startswith("error 429")]
    assert {r.rule.id for r in page} == surface_rules
    assert {r.outcome for r in page} == {Outcome.NOT_EVALUATED}, runner.table(page)
    assert all(r.evidence.startswith("no 429 after 200 requests to /api/prompt-cards (statuses 200: ") for r in page)


@pytest.mark.exclusive("measures a rate limiter")
def test_the_reference_edge_passes_rate_limits_within_tolerance(tmp_path: Path) -> None:
    """The clean edge measured the same way: the numbers the variants are compared with."""
    with Stack(edge_stack(tmp_path)) as stack:
        results = evaluate(stack, Area.RATE_LIMITS)
    assert_fails_exactly(results, set())


HEALTH_ROUTES = "    location = /api/health { access_log off; proxy_pass http://backend_servers; }\n"
# Health routes gone wrong in ways that never answer 429: an error status, a route the backend
# does not have (404), a limiter that delays instead of refusing (timeouts) and a reset (444).
# /api/health itself stays healthy: the stack boots on it, and it is the passing control.
BROKEN_HEALTH = """    location = /api/health/comprehensive { return 503; }
    location = /api/health/slow { limit_req zone=slowhealth burst=500; proxy_pass http://backend_servers/api/health; }
    location = /api/health/reset { return 444; }
"""
SLOW_ZONE = "limit_req_status 429;\nlimit_req_zone $binary_remote_addr zone=slowhealth:1m rate=1r/s;\n"


@pytest.mark.exclusive("measures a rate limiter")
def test_health_routes_that_are_not_healthy_in_a_burst_fail_with_what_was_seen(tmp_path: Path) -> None:
    """None of the broken routes answers 429, so the old rule (counting 429 only) passed them all."""
    conf = edited_conf(replace=((HEALTH_ROUTES, HEALTH_ROUTES + BROKEN_HEALTH), ("limit_req_status 429;\n", SLOW_ZONE)))
    broken = ["/api/health/comprehensive", "/api/health/stackcheck-missing", "/api/health/slow", "/api/health/reset"]
    rule = with_params("ratelimit-health-unlimited", paths=["/api/health", *broken])
    with Stack(edge_stack(tmp_path, conf)) as stack:
        results = runner.evaluate(rule, context(stack))
    assert [r.outcome for r in results] == [Outcome.PASS] + [Outcome.FAIL] * 4, runner.table(results)
    evidence = {r.subject.removeprefix("GET "): r.evidence for r in results}
    sent = int(rule.param("offered_rate") * rule.param("seconds"))
    prefix = f"{sent} of {sent} probes did not answer 2xx within 2s"
    assert evidence["/api/health"].startswith(f"{sent} probes at 40 r/s, all 2xx within 2s")
    assert evidence["/api/health/comprehensive"] == f"{prefix} (503: {sent})"
    assert evidence["/api/health/stackcheck-missing"] == f"{prefix} (404: {sent})"
    assert evidence["/api/health/reset"] == f"{prefix} (reset: {sent})"
    assert "timeout: " in evidence["/api/health/slow"], evidence


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


@dataclass
class Created:
    """A created, never started container in the place of a ServiceHandle's started one."""

    wrapped: docker.models.containers.Container

    def get_wrapped_container(self) -> docker.models.containers.Container:
        return self.wrapped


def test_privileged_and_public_data_ports_fail_the_registered_rules_on_a_created_container(
    docker_client: docker.DockerClient, image: Any
) -> None:
    """Both rules read the container's configuration (HostConfig), so created, never started
    containers prove them: no port is ever opened beyond loopback, and this sandbox refuses to
    start privileged containers anyway. A careful twin (loopback only, unprivileged) passes."""
    labels = {"org.stackcheck.variant": "1"}
    careless = docker_client.containers.create(
        image("postgres"), ports={"5432/tcp": ("0.0.0.0", None)}, privileged=True, labels=labels
    )
    try:
        careful = docker_client.containers.create(
            image("postgres"), ports={"5432/tcp": ("127.0.0.1", None)}, labels=labels
        )
        try:
            handles = [
                ServiceHandle(name, ServiceSpec(name, "postgres", {}), Created(c))  # type: ignore[arg-type]
                for name, c in (("careless", careless), ("careful", careful))
            ]
            ctx = CheckContext(_no_http(), FakeStack(handles), POLICY)  # type: ignore[arg-type]
            privileged = runner.evaluate(POLICY.rules["containers-not-privileged"], ctx)
            public = runner.evaluate(POLICY.rules["containers-no-public-data-ports"], ctx)
        finally:
            careful.remove(force=True)
    finally:
        careless.remove(force=True)
    assert [(r.subject, r.outcome, r.evidence) for r in privileged] == [
        ("careless", Outcome.FAIL, "runs privileged"),
        ("careful", Outcome.PASS, "not privileged"),
    ]
    assert [(r.subject, r.outcome, r.evidence) for r in public] == [
        ("careless", Outcome.FAIL, "data port published beyond loopback: 5432/tcp on 0.0.0.0:*"),
        ("careful", Outcome.PASS, "data ports only on loopback (or unpublished)"),
    ]


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
    assert_fails_exactly(results, {"redis-auth-required", "redis-default-user"})
    # Nothing connects to this Redis, so there is no application user to judge.
    [dangerous] = [r for r in results if r.rule.id == "redis-dangerous-commands"]
    assert dangerous.outcome is Outcome.NOT_EVALUATED
    assert dangerous.evidence.startswith("no service connects to redis")


def test_an_application_redis_user_that_may_flush_and_reconfigure_fails(tmp_path: Path) -> None:
    """The backend connects as `app`, which may run everything; `default` stays restricted, so
    the old rule (checking `default`) passed. Restricting `app` live makes the rule pass."""
    redis = copy.deepcopy(REFERENCE["services"]["redis"])
    redis.update(networks={"edge": [], "internal": []})  # edge: Docker publishes no port of an internal network
    redis["env"]["REDIS_EXTRA_CONF"] = "user app on >${secret.redis} ~* &* +@all"
    backend = {
        "depends_on": ["postgres", "redis"],
        "env": {"DATABASE_URL_FILE": "/run/secrets/database_url", "REDIS_URL_FILE": "/run/secrets/redis_url"},
        "files": {
            "/run/secrets/database_url": "postgresql://promptcard:${secret.pg-app}@postgres:5432/promptcard",
            "/run/secrets/redis_url": "redis://app:${secret.redis}@redis:6379/0",
        },
    }
    redis_rules = only(*(r for r in POLICY.area(Area.DATASTORES) if r.id.startswith("redis-")))
    rule = redis_rules.rules["redis-dangerous-commands"]
    with Stack(edge_stack(tmp_path, backend=backend, extra={"redis": redis})) as stack:
        with stack.http() as client:
            checks = client.get("/api/health/comprehensive").json()["checks"]
        results = evaluate(stack, Area.DATASTORES, policy=redis_rules)
        with stack.redis(admin=True) as admin:
            admin.execute_command("ACL", "SETUSER", "app", "-@dangerous")
        restricted = runner.evaluate(rule, context(stack, redis_rules))
    assert {c["name"]: c["status"] for c in checks}["redis"] == "healthy", "the backend must really use `app`"
    assert_fails_exactly(results, {"redis-dangerous-commands"})
    [dangerous] = [r for r in results if r.rule.id == "redis-dangerous-commands"]
    assert dangerous.subject == "redis user app (backend)"
    assert dangerous.evidence == "the application user 'app' may run FLUSHALL, FLUSHDB, CONFIG, DEBUG"
    assert [(r.outcome, r.evidence) for r in restricted] == [
        (Outcome.PASS, "the application user 'app' is denied FLUSHALL, FLUSHDB, CONFIG, DEBUG")
    ]


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
