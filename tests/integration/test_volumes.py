"""Named volumes of a stack file: created per run with the run's labels (the reaper's session
label included), mounted where the services say (read-only where asked), shared between them,
and removed with the stack: after a normal run, after a failed boot, after `stackcheck down`.
A volume kept on purpose survives its stack and is mounted, with its data, by the next one.
Every state is read from the engine after the step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

from stackcheck import stackfile
from stackcheck.errors import StackError
from stackcheck.stack import KEPT_LABEL, RUN_LABEL, STACK_LABEL, Stack, remove_runs
from stackcheck.volumes import VOLUME_LABEL
from tests.integration.leftovers import leftovers, run_ids, wait_gone

pytestmark = [pytest.mark.docker]

STACK = Path(__file__).parent / "data" / "volumes" / "stack.toml"


def run_volumes(client: docker.DockerClient, run_id: str) -> dict[str, dict[str, str]]:
    """The run's volumes by engine name, with their labels, fresh from the engine."""
    return {v.name: v.attrs["Labels"] for v in client.volumes.list(filters={"label": f"{RUN_LABEL}={run_id}"})}


def exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


def mounts(stack: Stack, instance: str) -> dict[str, tuple[str, bool]]:
    container = stack.service(instance).docker
    container.reload()
    return {m["Destination"]: (m["Name"], m["RW"]) for m in container.attrs["Mounts"] if m["Type"] == "volume"}


def sh(stack: Stack, instance: str, command: str) -> tuple[int, str]:
    code, out = stack.service(instance).docker.exec_run(["sh", "-c", command])
    return code, out.decode(errors="replace")


def test_volumes_are_labelled_mounted_shared_and_removed_with_the_stack(docker_client: docker.DockerClient) -> None:
    with Stack.from_file(STACK) as stack:
        run_id = stack.run_id
        found = run_volumes(docker_client, run_id)
        assert set(found) == {f"{run_id}-data", f"{run_id}-scratch"}, found
        for name, labels in found.items():
            assert labels[STACK_LABEL] == "volumes"
            assert labels[LABEL_SESSION_ID] == SESSION_ID, f"{name}: the reaper would not remove it"
            assert labels[VOLUME_LABEL] == name.removeprefix(f"{run_id}-")
        assert mounts(stack, "writer") == {"/srv/data": (f"{run_id}-data", True)}
        assert mounts(stack, "reader") == {
            "/srv/data": (f"{run_id}-data", False),
            "/srv/scratch": (f"{run_id}-scratch", True),
        }
        assert sh(stack, "reader", "cat /srv/data/hello") == (0, "from writer"), "the volume is not shared"
        code, out = sh(stack, "reader", "echo x > /srv/data/other")
        assert code != 0, "a :ro mount must be read-only"
        assert "Read-only file system" in out
        assert sh(stack, "reader", "echo x > /srv/scratch/ok && cat /srv/scratch/ok") == (0, "x\n")
    assert not leftovers(docker_client, run_id, found), "the stack's volumes outlived it"


def test_a_failed_boot_removes_the_volumes_it_created(docker_client: docker.DockerClient) -> None:
    spec = stackfile.load(STACK)
    # The second wave fails to start (no such user), after the volumes were created and mounted.
    broken = replace(spec.services["reader"], user="no-such-user")
    stack = Stack(replace(spec, services={**spec.services, "reader": broken}))
    with pytest.raises(StackError, match="failed to boot"):
        stack.start()
    assert not leftovers(docker_client, stack.run_id, [f"{stack.run_id}-data", f"{stack.run_id}-scratch"])


def test_stackcheck_down_removes_a_kept_stacks_volumes(docker_client: docker.DockerClient) -> None:
    stack = Stack.from_file(STACK, reap=False)
    try:
        stack.start()
        found = run_volumes(docker_client, stack.run_id)
        assert len(found) == 2
        assert all(labels[KEPT_LABEL] == "true" and LABEL_SESSION_ID not in labels for labels in found.values())
        down = subprocess.run(
            [sys.executable, "-m", "stackcheck.cli", "down", stack.run_id], capture_output=True, text=True, check=False
        )
        assert down.returncode == 0, down.stderr
        assert f"networks and 2 volumes ({stack.run_id})" in down.stdout, down.stdout
        assert not leftovers(docker_client, stack.run_id, found), "`stackcheck down RUN_ID` left volumes"
    finally:
        remove_runs(docker_client, stack.run_id)


def test_a_kept_volume_survives_its_stack_and_is_mounted_by_the_next(docker_client: docker.DockerClient) -> None:
    first = Stack.from_file(STACK)
    try:
        first.start()
        assert sh(first, "writer", "ls /srv/data")[1].split() == ["hello"]
        kept = first.stop(keep_volumes=["data"])
        assert kept == {"data": f"{first.run_id}-data"}
        assert exists(docker_client, kept["data"]), "the kept volume was removed with its stack"
        assert not exists(docker_client, f"{first.run_id}-scratch"), "a volume not kept must go"
        with Stack.from_file(STACK, volumes=kept) as second:
            assert mounts(second, "reader")["/srv/data"] == (kept["data"], False)
            assert mounts(second, "reader")["/srv/scratch"] == (f"{second.run_id}-scratch", True)
            assert sh(second, "reader", "cat /srv/data/hello") == (0, "from writer")
        assert not exists(docker_client, kept["data"]), "the stack that adopted the volume must remove it"
        assert not leftovers(docker_client, second.run_id)
    finally:
        remove_runs(docker_client, first.run_id)


def test_a_volume_handed_on_must_exist_and_be_declared(docker_client: docker.DockerClient) -> None:
    with pytest.raises(StackError, match="'stackcheck-no-such-volume' handed to this stack as 'data' does not exist"):
        Stack.from_file(STACK, volumes={"data": "stackcheck-no-such-volume"}).start()
    with pytest.raises(StackError, match="not in its stack file: logs"):
        Stack.from_file(STACK, volumes={"logs": "x"}).start()


def test_sigterm_mid_boot_removes_the_volumes(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """`stackcheck up` (kept: no reaper) told to stop while it waits for an entrypoint that never
    answers: its containers are up and its volumes mounted; within 5 s all of it is gone."""
    text = STACK.read_text().replace('name = "volumes"', 'name = "volumes"\nentrypoint = "http://writer:8080"')
    text = text.replace("internal = true", "internal = false")  # Docker publishes no port of an internal network
    stuck = tmp_path / "stack.toml"
    stuck.write_text(
        text.replace('user = "0:0"\ncommand = ["python3"', 'user = "0:0"\nports = [8080]\ncommand = ["python3"', 1)
    )
    before = run_ids(docker_client)
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackcheck.cli", "up", "--stack", str(stuck)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run_id = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run_id is None:
            for run in {r for r in run_ids(docker_client) - before if r.startswith("volumes-")}:
                if (
                    len(run_volumes(docker_client, run)) == 2
                    and len(docker_client.containers.list(filters={"label": f"{RUN_LABEL}={run}"})) == 2
                ):
                    run_id = run
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert run_id is not None, f"no booting run with its volumes within 120 s:\n{log.read_text()}"
        volumes = set(run_volumes(docker_client, run_id))
        proc.send_signal(signal.SIGTERM)
        left = wait_gone(docker_client, run_id, volumes, 5.0)
        code = proc.wait(timeout=60)
        assert "up in" not in log.read_text(), "the stack was no longer booting when signalled"
        assert not left, f"5 s after SIGTERM mid-boot, run {run_id} still has {left}"
        assert code == 128 + signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        for run in run_ids(docker_client) - before:
            if run.startswith("volumes-"):  # this test's stack only: other runs are not ours
                remove_runs(docker_client, run)


def test_the_reaper_removes_the_volumes_of_a_killed_session(docker_client: docker.DockerClient) -> None:
    """A process that dies without cleanup (os._exit) leaves its stack to the reaper, volumes too:
    they carry the session label the reaper filters on."""
    script = (
        "import os, sys\n"
        "from stackcheck.stack import Stack\n"
        f"stack = Stack.from_file({str(STACK)!r}).start()\n"
        "print(stack.run_id, sorted(stack.volumes.values()), flush=True)\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "RYUK_RECONNECTION_TIMEOUT": "1s"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run_id, created = proc.stdout.split(maxsplit=1)
    volumes = [f"{run_id}-data", f"{run_id}-scratch"]
    assert created.strip() == repr(volumes), f"the session made no volumes to leave behind: {created}"
    try:
        left = wait_gone(docker_client, run_id, volumes, 30.0)
        assert not left, f"30 s after its session died, run {run_id} still has {left}"
    finally:
        remove_runs(docker_client, run_id)
