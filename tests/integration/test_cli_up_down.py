"""`stackcheck up` leaves a stack running (no reaper) and prints how to reach it; `stackcheck
down` removes every container, network, volume and file of that run. Every state asserted here
is read from the engine after the step (by the run's label), never from an object cached before."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from collections.abc import Iterator

import docker
import httpx
import pytest

from stackcheck.stack import RUN_LABEL, RUNS_DIR, Stack, remove_runs
from tests.integration.leftovers import containers, leftovers, mounted_volumes, reference_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERVICES, NETWORKS = reference_containers(), 3  # the reference stack's containers and networks


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def kept(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Run ids `up` kept: removed at the end whatever the test did (a kept stack has no reaper)."""
    runs: list[str] = []
    yield runs
    for run_id in runs:
        remove_runs(docker_client, run_id)


def up(client: docker.DockerClient, kept: list[str]) -> tuple[str, set[str], subprocess.CompletedProcess[str]]:
    """`stackcheck up`: its run id, the volumes its containers mount, its output; all of it running."""
    result = cli("up")
    assert result.returncode == 0, result.stderr
    run_id = re.search(r"stackcheck down (\S+)", result.stdout).group(1)  # type: ignore[union-attr]
    kept.append(run_id)
    states = [c.status for c in containers(client, run_id)]
    assert states == ["running"] * SERVICES, states
    assert len(client.networks.list(filters={"label": f"{RUN_LABEL}={run_id}"})) == NETWORKS
    return run_id, mounted_volumes(client, run_id), result


def test_up_then_down_leaves_nothing(docker_client: docker.DockerClient, kept: list[str]) -> None:
    run_id, volumes, _ = up(docker_client, kept)
    down = cli("down")
    assert down.returncode == 0, f"with exactly one kept stack, `down` alone removes it: {down.stderr}"
    assert f"removed {SERVICES} containers, {NETWORKS} networks and 0 volumes ({run_id})" in down.stdout
    left = leftovers(docker_client, run_id, volumes)
    assert not left, f"`down` left {left}"
    assert not (RUNS_DIR / run_id).exists()

    run_id, volumes, result = up(docker_client, kept)
    try:
        entry = re.search(r"entrypoint: (https://localhost:\d+)\s+\(CA: (\S+)\)", result.stdout)
        assert entry, result.stdout
        tls = ssl.create_default_context(cafile=entry.group(2))
        assert httpx.get(f"{entry.group(1)}/api/health", verify=tls, timeout=5).status_code == 200
        assert (RUNS_DIR / run_id / "credentials.json").is_file()
    finally:
        down = cli("down", run_id)
    assert down.returncode == 0, down.stderr
    assert f"removed {SERVICES} containers, {NETWORKS} networks and 0 volumes ({run_id})" in down.stdout
    left = leftovers(docker_client, run_id, volumes)
    assert not left, f"`down {run_id}` left {left}"
    assert not (RUNS_DIR / run_id).exists()


def test_down_without_a_run_id_never_guesses_a_test_sessions_stack(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """The session's stack is up (reaped, not kept): `down` must not pick it."""
    before = sorted(c.name for c in containers(docker_client, stack.run_id))
    assert len(before) == SERVICES
    result = cli("down")
    assert result.returncode == 2
    assert "0 stacks kept by `stackcheck up` are running" in result.stderr
    assert "stackcheck down RUN_ID" in result.stderr
    after = {c.name: c.status for c in containers(docker_client, stack.run_id)}
    assert sorted(after) == before, f"`down` removed some of the session's containers: {after}"
    assert set(after.values()) == {"running"}, after
    assert len(docker_client.networks.list(filters={"label": f"{RUN_LABEL}={stack.run_id}"})) == NETWORKS
