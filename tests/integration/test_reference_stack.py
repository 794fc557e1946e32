"""The reference stack, booted once for the module: CRUD through nginx over verified TLS, the
Redis cache, health that follows a cut link, replica reads, and clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import docker
import httpx
import pytest

from stackcheck.errors import ImageMissingError, StackError
from stackcheck.stack import RUN_LABEL, Stack
from stackcheck.stackfile import parse

pytestmark = pytest.mark.docker


def check(health: dict[str, Any], name: str) -> str:
    return next(c["status"] for c in health["checks"] if c["name"] == name)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout}s")


def test_crud_through_nginx_with_verified_tls(stack: Stack) -> None:
    with stack.http() as api:
        created = api.post("/api/prompt-cards", json={"title": "crud", "prompt": "say hi", "category": "it"})
        assert created.status_code == 201, created.text
        card = created.json()
        assert api.get(f"/api/prompt-cards/{card['id']}").json()["title"] == "crud"
        updated = api.put(f"/api/prompt-cards/{card['id']}", json={"title": "crud v2"})
        assert updated.status_code == 200
        assert updated.json()["version"] == 2
        assert api.delete(f"/api/prompt-cards/{card['id']}").status_code == 204
        assert api.get(f"/api/prompt-cards/{card['id']}").status_code == 404


def test_tls_is_verified_against_the_run_ca(stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.url()}/api/health", timeout=5)  # the system trust store does not know the run CA


def test_http_redirects_to_https(stack: Stack) -> None:
    response = httpx.get(f"{stack.url('nginx', 8080, 'http')}/api/prompt-cards", timeout=5)
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://")


def test_a_repeated_read_is_served_from_redis(stack: Stack) -> None:
    with stack.http() as api:
        card = api.post("/api/prompt-cards", json={"title": "cached", "prompt": "p"}).json()
        first = api.get(f"/api/prompt-cards/{card['id']}")
        second = api.get(f"/api/prompt-cards/{card['id']}")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    cache = stack.redis(admin=True)
    assert any(card["id"] in key.decode() for key in cache.scan_iter(count=1000)), "no Redis key holds the card"


@pytest.mark.exclusive("cuts a link of the shared session stack")
def test_health_degrades_when_the_redis_link_is_cut_and_recovers(stack: Stack) -> None:
    with stack.http() as api:
        assert check(api.get("/api/health/comprehensive").json(), "redis") == "healthy"
        with stack.link("backend->redis").down():
            health = wait_for(
                lambda: (
                    (h := api.get("/api/health/comprehensive")).status_code == 200
                    and check(h.json(), "redis") == "unhealthy"
                    and h.json()
                ),
                10,
                "redis never reported unhealthy with its link cut",
            )
            assert health["status"] == "degraded"
            assert check(health, "database") == "healthy"
            # The API keeps working without its cache.
            assert api.get("/api/prompt-cards").status_code == 200
        wait_for(
            lambda: check(api.get("/api/health/comprehensive").json(), "redis") == "healthy",
            10,
            "redis never recovered after its link was restored",
        )
    assert stack.link("backend->redis").enabled


def test_replica_reads_reflect_primary_writes(stack: Stack) -> None:
    with stack.http() as api:
        card = api.post("/api/prompt-cards", json={"title": "replicated-zebra", "prompt": "p"}).json()
    with stack.postgres("postgres-replica") as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        wait_for(
            lambda: replica.execute("SELECT 1 FROM prompt_cards WHERE id = %s", (card["id"],)).fetchone(),
            10,
            "the write never reached the replica",
        )
    with stack.http() as api:
        found = api.get("/api/prompt-cards", params={"q": "replicated-zebra"}).json()
    assert [c["id"] for c in found["items"]] == [card["id"]]


def test_unknown_service_and_link_are_clear_errors(stack: Stack) -> None:
    with pytest.raises(StackError, match="has no service 'nope'") as err:
        stack.service("nope")
    assert "postgres-primary" in err.value.fix
    with pytest.raises(StackError, match="has no link 'a->b'"):
        stack.link("a->b")


def test_an_image_that_is_not_built_is_named_with_the_build_command(tmp_path: Any) -> None:
    spec = parse(
        {
            "stack": {"name": "missing", "entrypoint": "http://web:8080"},
            "networks": {"net": {}},
            "services": {"web": {"image": "no-such-image", "networks": {"net": []}, "ports": [8080]}},
        },
        tmp_path / "stack.toml",
    )
    with pytest.raises(ImageMissingError, match="unknown image 'no-such-image'"):
        Stack(spec).start()


def test_sigkill_of_the_test_process_leaves_nothing_within_30s(docker_client: docker.DockerClient) -> None:
    """The reaper removes a stack whose pytest process was killed with SIGKILL mid-session."""
    script = textwrap.dedent(
        """
        import sys, time
        from stackcheck.stack import Stack
        stack = Stack.from_file().start()
        print(stack.run_id, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "RYUK_RECONNECTION_TIMEOUT": "2s"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, "the stack did not boot"
        label = {"label": f"{RUN_LABEL}={run_id}"}
        assert docker_client.containers.list(filters=label)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    wait_for(
        lambda: (
            not docker_client.containers.list(all=True, filters=label)
            and not docker_client.networks.list(filters=label)
        ),
        30,
        f"containers or networks of run {run_id} remained 30 s after SIGKILL",
    )
    print(f"stack reaped {time.monotonic() - killed:.1f}s after SIGKILL")
