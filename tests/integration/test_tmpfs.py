"""A non-root service's tmpfs stays writable after a restart of its container.

Docker (runc) mounts a tmpfs on a path the image lacks with mode 1777 the first time; at a restart
the mountpoint it created then (root's, 0755) exists and the new tmpfs gets that mode, so the
service's user can no longer write: Ollama could not write its key after a restart. The stack
mounts each tmpfs owned by the service's user (uid=, gid=), read from the image when the stack
file names none. Shown to fail with Docker's default options. State is read fresh from the engine.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_tmpfs.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackcheck import stack as stack_module
from stackcheck.stack import ServiceHandle, Stack
from stackcheck.waiting import wait_until

pytestmark = [pytest.mark.docker]

STACK = Path(__file__).parent / "data" / "tmpfs" / "stack.toml"
PATH = "/var/cache/app"


def write(app: ServiceHandle) -> tuple[int, str]:
    """A file written by the container's own user (exec runs as the image's user)."""
    code, out = app.docker.exec_run(["sh", "-c", f"id -u; stat -c '%u:%g %a' {PATH}; touch {PATH}/f && echo wrote"])
    return code, out.decode(errors="replace").strip()


def restart(app: ServiceHandle) -> None:
    app.docker.restart(timeout=1)

    def running() -> bool | None:
        app.docker.reload()
        return app.docker.status == "running" or None

    assert wait_until(running, 10) is not None, f"{app.name} not running after its restart: {app.docker.status}"


def test_a_non_root_services_tmpfs_is_writable_after_a_restart() -> None:
    with Stack.from_file(STACK) as stack:
        app = stack.service("app")
        app.docker.reload()
        assert app.docker.attrs["HostConfig"]["Tmpfs"] == {PATH: "uid=1001,gid=1001"}
        assert write(app) == (0, "1001\n1001:1001 1777\nwrote")
        restart(app)
        code, out = write(app)
        assert code == 0, f"after a restart the tmpfs is not the service's: {out}"
        assert out.splitlines()[1].startswith("1001:1001 "), out


def test_with_dockers_default_options_the_restart_takes_the_tmpfs_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken variant: what the ownership prevents."""
    monkeypatch.setattr(stack_module, "tmpfs_options", lambda user: "")
    with Stack.from_file(STACK) as stack:
        app = stack.service("app")
        assert write(app)[0] == 0, "writable at the first start (mode 1777)"
        restart(app)
        code, out = write(app)
        assert code != 0, out
        assert "0:0 755" in out, out
        assert "Permission denied" in out, out
