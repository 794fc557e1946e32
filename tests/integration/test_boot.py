"""Boot readiness on real containers: stackcheck runs each image's own HEALTHCHECK itself while a
service starts (Docker 20.10 runs it first one interval after the start), so a service counts as
ready when its check passes, not 2 s later, and not while its check fails. A service that exits
while its wave starts is one clear error naming it, at once, and the run leaves nothing.
State is read fresh from the engine."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import docker
import pytest

from stackcheck.stack import NotReady, Stack, container_health, run_healthcheck
from tests.integration.leftovers import leftovers

pytestmark = [pytest.mark.docker, pytest.mark.exclusive("bounds in seconds on readiness")]
MINIMAL = Path(__file__).parent / "data" / "minimal"


def minimal_stack(tmp_path: Path, extra: str = "") -> Path:
    """The one-nginx stack of data/minimal, with ``extra`` TOML appended."""
    folder = tmp_path / "stack"
    shutil.copytree(MINIMAL, folder)
    (folder / "stack.toml").write_text((folder / "stack.toml").read_text() + extra)
    return folder / "stack.toml"


def test_a_service_is_ready_when_its_own_check_passes_while_docker_still_says_starting(tmp_path: Path) -> None:
    with Stack.from_file(minimal_stack(tmp_path)) as stack:
        web = stack.service("web").docker
        web.reload()
        docker_says = web.attrs["State"]["Health"]["Status"]
        print(f"\nminimal stack up in {stack.boot_seconds:.2f}s; Docker's health then: {docker_says}")
        assert stack.boot_seconds is not None
        assert stack.boot_seconds < 2.0, "one nginx must not wait for Docker's 2 s healthcheck interval"
        web.restart(timeout=1)
        web.reload()
        assert web.attrs["State"]["Health"]["Status"] == "starting", "a restart resets Docker's health"
        ready = stack.service("web").await_ready(10)
        web.reload()
        print(f"web ready {ready:.2f}s after its restart; Docker's health then: {web.attrs['State']['Health']}")
        assert ready < 1.5
        assert container_health(web) == "healthy"


def test_a_failing_healthcheck_is_never_ready_and_the_timeout_names_the_service(tmp_path: Path) -> None:
    """The broken variant: nginx runs, but its image's healthcheck asks a port nothing listens on."""
    path = minimal_stack(tmp_path)
    text = path.read_text().replace('cap_drop = ["ALL"]\n', 'cap_drop = ["ALL"]\nready_timeout_s = 3\n', 1)
    path.write_text(text + '[services.web.env]\nHEALTHCHECK_PORT = "1"\n')
    stack = Stack.from_file(path)
    started = time.monotonic()
    with pytest.raises(NotReady) as err:
        stack.start()
    print(f"\n{err.value}")
    assert time.monotonic() - started < 10
    assert "stack minimal failed to boot: web was not ready within 3s (still starting; its healthcheck: exit 1" in (
        err.value.problem
    )
    assert "ready_timeout_s" in err.value.fix


def test_run_healthcheck_reports_the_check_failing_then_passing(tmp_path: Path) -> None:
    with Stack.from_file(minimal_stack(tmp_path)) as stack:
        web = stack.service("web").docker
        assert run_healthcheck(web) is None
        web.exec_run(["nginx", "-s", "stop"])  # the main process ends: the container exits
        deadline = time.monotonic() + 10
        while container_health(web) == "healthy" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert container_health(web) == "exited"
        assert run_healthcheck(web) is not None, "a stopped container's check cannot pass"


def test_a_service_that_exits_is_one_clear_error_at_once_and_nothing_is_left(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """``broken`` exits at once; ``slow`` in the same wave would take 60 s to time out and ``after``
    waits for both: the boot fails on ``broken`` within seconds and removes all three."""
    path = minimal_stack(
        tmp_path,
        """
[services.broken]
image = "nginx"
networks = { edge = [] }
command = ["/bin/sh", "-c", "echo broken-on-purpose >&2; sleep 0.5; exit 3"]

[services.slow]
image = "nginx"
networks = { edge = [] }
command = ["sleep", "600"]

[services.after]
image = "nginx"
networks = { edge = [] }
depends_on = ["broken", "slow"]
""",
    )
    stack = Stack.from_file(path)
    started = time.monotonic()
    with pytest.raises(NotReady) as err:
        stack.start()
    took = time.monotonic() - started
    print(f"\nfailed after {took:.1f}s: {err.value}")
    assert took < 10, "the wave must not wait out slow's 60 s readiness timeout"
    assert err.value.problem.startswith("stack minimal failed to boot: broken is exited (exit code 3) while starting")
    assert "broken-on-purpose" in err.value.problem, "the service's own log lines"
    assert not leftovers(docker_client, stack.run_id), "nothing of the run may be left"
