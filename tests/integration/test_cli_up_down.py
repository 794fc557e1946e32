"""`stackcheck up` leaves a stack running (no reaper) and prints how to reach it; `stackcheck
down` removes every container, network and file of that run."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys

import docker
import httpx
import pytest

from stackcheck.stack import RUN_LABEL, RUNS_DIR, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_up_then_down_leaves_nothing(docker_client: docker.DockerClient) -> None:
    up = cli("up")
    assert up.returncode == 0, up.stderr
    run_id = re.search(r"stackcheck down (\S+)", up.stdout).group(1)  # type: ignore[union-attr]
    assert cli("down").returncode == 0, "with exactly one kept stack, `down` alone removes it"
    up = cli("up")
    run_id = re.search(r"stackcheck down (\S+)", up.stdout).group(1)  # type: ignore[union-attr]
    label = {"label": f"{RUN_LABEL}={run_id}"}
    try:
        entry = re.search(r"entrypoint: (https://localhost:\d+)\s+\(CA: (\S+)\)", up.stdout)
        assert entry, up.stdout
        assert (
            httpx.get(
                f"{entry.group(1)}/api/health", verify=ssl.create_default_context(cafile=entry.group(2)), timeout=5
            ).status_code
            == 200
        )
        assert len(docker_client.containers.list(filters=label)) == 7
        assert (RUNS_DIR / run_id / "credentials.json").is_file()
    finally:
        down = cli("down", run_id)
    assert down.returncode == 0, down.stderr
    assert "removed 7 containers and 3 networks" in down.stdout
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []
    assert not (RUNS_DIR / run_id).exists()


def test_down_without_a_run_id_never_guesses_a_test_sessions_stack(stack: Stack) -> None:
    """The session's stack is up (reaped, not kept): `down` must not pick it."""
    result = cli("down")
    assert result.returncode == 2
    assert "0 stacks kept by `stackcheck up` are running" in result.stderr
    assert "stackcheck down RUN_ID" in result.stderr
    assert stack.service("nginx").docker.status == "running"
