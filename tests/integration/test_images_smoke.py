"""Each built image, started through testcontainers with the reaper on, does its job as non-root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import httpx
import psycopg
import pytest
import redis
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy
from toxiproxy import Toxiproxy

from stackcheck.tcdefaults import LOOPBACK

pytestmark = pytest.mark.docker


def process_uids(container: DockerContainer) -> list[int]:
    """UIDs of every process in the container, as the engine's `top` sees them."""
    top = container.get_wrapped_container().top(ps_args="-o pid,uid,comm")
    uid_col = top["Titles"].index("UID")
    return [int(row[uid_col]) for row in top["Processes"]]


def assert_non_root_and_loopback(container: DockerContainer) -> None:
    uids = process_uids(container)
    assert uids, "no process found in the container"
    assert 0 not in uids, f"a process runs as root: uids {uids}"
    ports = container.get_wrapped_container().attrs["NetworkSettings"]["Ports"]
    host_ips = {b["HostIp"] for bindings in ports.values() if bindings for b in bindings}
    assert host_ips <= {LOOPBACK}, f"published on {host_ips}, expected only {LOOPBACK}"


def healthy(container: DockerContainer) -> DockerContainer:
    return container.waiting_for(HealthcheckWaitStrategy().with_startup_timeout(60))


def test_nginx_serves_as_non_root(image: Callable[[str], str]) -> None:
    with healthy(DockerContainer(image("nginx")).with_exposed_ports(8080)) as nginx:
        url = f"http://{nginx.get_container_host_ip()}:{nginx.get_exposed_port(8080)}/"
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200
        assert "stackcheck nginx" in response.text
        assert "nginx/" not in response.headers.get("server", ""), "server_tokens should hide the version"
        assert_non_root_and_loopback(nginx)


def test_postgres_accepts_a_query_with_tls(image: Callable[[str], str]) -> None:
    container = (
        DockerContainer(image("postgres"))
        .with_env("POSTGRES_PASSWORD", "smoke-su")
        .with_env("POSTGRES_APP_USER", "app")
        .with_env("POSTGRES_APP_PASSWORD", "smoke-app")
        .with_env("POSTGRES_DB", "smoke")
        .with_exposed_ports(5432)
    )
    with healthy(container) as pg:
        dsn = f"host={pg.get_container_host_ip()} port={pg.get_exposed_port(5432)} dbname=smoke user=app"
        with psycopg.connect(f"{dsn} password=smoke-app sslmode=require", connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"{dsn} password=wrong", connect_timeout=5)
        assert_non_root_and_loopback(pg)


def test_redis_answers_ping_only_with_password(image: Callable[[str], str]) -> None:
    container = DockerContainer(image("redis")).with_env("REDIS_PASSWORD", "smoke-redis").with_exposed_ports(6379)
    with healthy(container) as rd:
        host, port = rd.get_container_host_ip(), int(rd.get_exposed_port(6379))
        assert redis.Redis(host=host, port=port, password="smoke-redis", socket_timeout=5).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=host, port=port, socket_timeout=5).ping()
        assert_non_root_and_loopback(rd)


def test_toxiproxy_version_and_a_proxy_passes_traffic(image: Callable[[str], str]) -> None:
    container = DockerContainer(image("toxiproxy")).with_exposed_ports(8474, 18474)
    with healthy(container) as tp:
        host, api_port = tp.get_container_host_ip(), int(tp.get_exposed_port(8474))
        version = httpx.get(f"http://{host}:{api_port}/version", timeout=5)
        assert version.status_code == 200
        assert "2.12.0" in version.text
        # The proxy listens inside the container and forwards to the API itself: traffic
        # through the published proxy port proves Toxiproxy passes bytes end to end.
        client = Toxiproxy()
        client.update_api_consumer(host, api_port)
        client.create(upstream="127.0.0.1:8474", name="smoke", listen="0.0.0.0:18474")
        through = httpx.get(f"http://{host}:{tp.get_exposed_port(18474)}/version", timeout=5)
        assert through.text == version.text
        assert_non_root_and_loopback(tp)


def test_python_runtime_imports_the_app_stack_as_uid_1001(
    image: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    tag = image("python")
    output = docker_client.containers.run(tag, remove=True)
    assert output.strip() == b"ok"
    assert docker_client.containers.run(tag, ["id", "-u"], remove=True).strip() == b"1001"


def test_ryuk_reaps_containers_of_a_killed_session(
    image: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    """A process that dies without cleanup (os._exit) leaves its containers to the reaper."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from stackcheck import engine
        engine.client()  # the first talk to the engine applies the defaults: our reaper, loopback
        from testcontainers.core.container import DockerContainer, Reaper
        from testcontainers.core.config import testcontainers_config as c
        c = DockerContainer({image("redis")!r}).with_env("REDIS_PASSWORD", "x").start()
        ryuk = Reaper._container.get_wrapped_container()
        top = ryuk.top(ps_args="-o pid,uid,comm")
        col = top["Titles"].index("UID")
        print(c.get_wrapped_container().id, ryuk.id, ",".join(r[col] for r in top["Processes"]), flush=True)
        os._exit(0)
        """
    )
    env = {**os.environ, "RYUK_RECONNECTION_TIMEOUT": "1s"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent
    )
    assert proc.returncode == 0, proc.stderr
    victim_id, ryuk_id, ryuk_uids = proc.stdout.split()
    assert "0" not in ryuk_uids.split(","), f"the reaper runs as root: uids {ryuk_uids}"
    deadline, reaper_log = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        alive = {c.id for c in docker_client.containers.list(all=True)}
        if victim_id not in alive and ryuk_id not in alive:
            return
        # The reaper removes itself when done: keep its log while it is there, for the message
        # (a container being removed answers 409, not 404: "dead or marked for removal").
        with contextlib.suppress(docker.errors.APIError):
            reaper_log = docker_client.containers.get(ryuk_id).logs(tail=30).decode(errors="replace")
        time.sleep(0.5)
    left = [name for cid, name in ((victim_id, "the victim"), (ryuk_id, "the reaper")) if cid in alive]
    pytest.fail(
        f"30 s after the session died, {' and '.join(left)} still exist (victim {victim_id[:12]}, reaper "
        f"{ryuk_id[:12]}); the reaper's log:\n{reaper_log}\nthe session's stderr:\n{proc.stderr}"
    )
