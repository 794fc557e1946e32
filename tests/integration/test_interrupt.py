"""SIGTERM to a stackcheck command removes what that run started within seconds, mid-boot
(services still starting, the stack only partly created) and mid-run, without the reaper:
`up` keeps its stack and has none. Leftovers are read from the engine by the run's label."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from stackcheck.stack import Stack
from tests.integration.leftovers import Leftovers, RunWatch, containers, reference_containers, wait_gone

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.exclusive("bounds in seconds on teardown after a signal"),
]

SERVICES = reference_containers()
CLEAN_WITHIN_S = 5.0


class Command:
    """A stackcheck command in a session of its own; output to a file the test polls."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stackcheck.cli", *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, what: str, condition: Callable[[], object], timeout: float = 180.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            assert self.proc.poll() is None, f"ended ({self.proc.returncode}) before {what}:\n{self.output}"
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout:.0f}s:\n{self.output}")


def sigterm(command: Command, client: docker.DockerClient, run_id: str, watch: RunWatch) -> tuple[Leftovers, int]:
    """SIGTERM to the command's process alone; what is left of the run 5 s later, and its exit code."""
    command.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    left = wait_gone(client, run_id, watch.volumes.get(run_id, set()), CLEAN_WITHIN_S)
    state = f"left {left}" if left else "nothing left"
    print(f"run {run_id}: {state} {time.monotonic() - signalled:.1f}s after SIGTERM")
    try:
        code = command.proc.wait(timeout=60)
    finally:
        if command.proc.poll() is None:
            command.proc.kill()
    return left, code


def new_run(client: docker.DockerClient, watch: RunWatch) -> Callable[[], str | None]:
    """The run this test started, once it has a container."""

    def find() -> str | None:
        return next((r for r in watch.new_runs() if containers(client, r)), None)

    return find


@pytest.mark.parametrize("args", [["up"], ["check", "compliance"]], ids=["up", "check-compliance"])
def test_sigterm_mid_boot_removes_the_partial_stack(
    args: list[str], docker_client: docker.DockerClient, watch: RunWatch, tmp_path: Path
) -> None:
    command = Command(args, tmp_path / "out.log")
    run_id = str(command.wait_for("a first container", new_run(docker_client, watch)))
    # Every container is created at once, then started wave after wave: booting = not all running.
    started = sum(c.status == "running" for c in containers(docker_client, run_id))
    left, code = sigterm(command, docker_client, run_id, watch)
    assert started < SERVICES, f"the stack was no longer booting when signalled ({started} containers running)"
    assert "up in" not in command.output, command.output
    assert not left, f"{CLEAN_WITHIN_S:.0f}s after SIGTERM mid-boot, run {run_id} still has {left}"
    assert code == 128 + signal.SIGTERM, command.output
    assert "interrupted (terminated by SIGTERM)" in command.output


@pytest.mark.parametrize(
    "args",
    [["check", "compliance"], ["load", "run", "--no-history", "--duration", "60"]],
    ids=["check-compliance", "load-run"],
)
def test_sigterm_mid_run_removes_the_stack(
    args: list[str], docker_client: docker.DockerClient, watch: RunWatch, tmp_path: Path
) -> None:
    """Mid-run: the checks, or Locust's master and workers, are running against the booted stack."""
    command = Command(args, tmp_path / "out.log")
    command.wait_for("the stack up", lambda: "up in" in command.output)
    run_id = str(new_run(docker_client, watch)())
    time.sleep(3.0)  # the checks, or Locust, are running
    left, code = sigterm(command, docker_client, run_id, watch)
    assert "results:" not in command.output, "the command had finished before the signal"
    assert not left, f"{CLEAN_WITHIN_S:.0f}s after SIGTERM mid-run, run {run_id} still has {left}"
    assert code == 128 + signal.SIGTERM, command.output


def test_sigterm_mid_gate_stops_its_pytest_and_removes_the_stack(
    stack: Stack, docker_client: docker.DockerClient, watch: RunWatch, tmp_path: Path
) -> None:
    """The gate forwards the signal to its pytest child, which tears its session stack down."""
    command = Command(["gate", "--offline", "--area", "compliance"], tmp_path / "out.log")

    def booted() -> str | None:
        run_id = new_run(docker_client, watch)()
        if run_id is None:
            return None
        states = [c.status for c in containers(docker_client, run_id)]
        return run_id if states == ["running"] * SERVICES else None

    run_id = str(command.wait_for("the gate's stack up", booted))
    time.sleep(3.0)  # the compliance suite is running
    left, code = sigterm(command, docker_client, run_id, watch)
    assert "stackcheck gate (smoke)" not in command.output, "the gate had finished before the signal"
    assert not left, f"{CLEAN_WITHIN_S:.0f}s after SIGTERM to the gate, run {run_id} still has {left}"
    assert code == 128 + signal.SIGTERM, command.output
    assert [c.status for c in containers(docker_client, stack.run_id)] == ["running"] * SERVICES, (
        "another run's stack must be untouched"
    )
