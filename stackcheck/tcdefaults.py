"""testcontainers defaults for stackcheck, applied when it first talks to the engine, each
overridable by the user's env.

- Connection mode ``docker_host`` and host ``127.0.0.1``: machines with ``/.dockerenv`` make
  testcontainers guess it runs inside a container and aim at the bridge gateway instead.
- The reaper image is the one ``stackcheck images build`` makes, so Ryuk stays on offline.
- Every published port binds to 127.0.0.1: testcontainers publishes on all interfaces, and a
  stack under test must never be reachable from outside the machine.
- The reaper must acknowledge the session's filter before any container starts: testcontainers
  sends it and never reads the answer, so a line lost on the way (seen in CI: the reaper logged
  no client at all) leaves every container of a killed run behind with nobody to reap it.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

LOOPBACK = "127.0.0.1"
REAPER_ACK_TIMEOUT = 5.0
REAPER_ATTEMPTS = 4
log = logging.getLogger("stackcheck.engine")
_RYUK_ENV = ("TESTCONTAINERS_RYUK_CONTAINER_IMAGE", "RYUK_CONTAINER_IMAGE")


@functools.cache
def apply() -> None:
    """Once per process; safe to call before or after testcontainers is imported."""
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TC_HOST", LOOPBACK)

    from testcontainers.core import config as tc_config
    from testcontainers.core import docker_client

    c = tc_config.testcontainers_config
    # testcontainers reads these env vars once, at its own import: re-read them here.
    c.tc_host_override = os.environ["TC_HOST"]
    c.connection_mode_override = tc_config.ConnectionMode(os.environ["TESTCONTAINERS_CONNECTION_MODE"])
    user_ryuk = next((os.environ[k] for k in _RYUK_ENV if os.environ.get(k)), None)
    user_ryuk = user_ryuk or c.tc_properties.get("ryuk.container.image")
    c.ryuk_image = user_ryuk or _built_ryuk_tag()

    for method in ("create", "run"):
        original = getattr(docker_client.DockerClient, method)
        if not getattr(original, "_stackcheck_loopback", False):
            setattr(docker_client.DockerClient, method, _loopback_ports(original))

    from testcontainers.core.container import Reaper

    create = Reaper.__dict__["_create_instance"].__func__  # the classmethod's function
    if not getattr(create, "_stackcheck_acked", False):
        Reaper._create_instance = classmethod(_acknowledged(create))  # type: ignore[assignment]


def _built_ryuk_tag() -> str:
    from stackcheck.images import Catalog

    return Catalog.load().tag("ryuk")


def loopback_bindings(ports: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Rewrite docker-py port bindings so each one names 127.0.0.1 as its host address."""
    if ports is None:
        return None
    bound: dict[str, Any] = {}
    for container_port, host in ports.items():
        if host is None:
            bound[container_port] = (LOOPBACK,)
        elif isinstance(host, int | str):
            bound[container_port] = (LOOPBACK, int(host))
        else:
            bound[container_port] = host  # already explicit (address, port): the caller chose
    return bound


def _loopback_ports(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, image: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["ports"] = loopback_bindings(kwargs.get("ports"))
        return method(self, image, *args, **kwargs)

    wrapper._stackcheck_loopback = True  # type: ignore[attr-defined]
    return wrapper


def _acknowledged(create: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap ``Reaper._create_instance``: read the reaper's ACK, re-register until it comes."""

    @functools.wraps(create)
    def wrapper(cls: Any) -> Any:
        from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

        instance = create(cls)
        line = f"label={LABEL_SESSION_ID}={SESSION_ID}\r\n".encode()
        container = cls._container
        failures: list[str] = []
        for attempt in range(REAPER_ATTEMPTS):
            if attempt:
                cls._socket.close()
                address = (container.get_container_host_ip(), int(container.get_exposed_port(8080)))
                cls._socket = socket.create_connection(address, timeout=REAPER_ACK_TIMEOUT)
                cls._socket.sendall(line)
            problem = await_ack(cls._socket, REAPER_ACK_TIMEOUT)
            if problem is None:
                if failures:
                    log.warning("the reaper acknowledged on attempt %d (before: %s)", attempt + 1, "; ".join(failures))
                return instance
            failures.append(problem)
            log.warning("the reaper did not acknowledge the session filter (%s): registering again", problem)
        from stackcheck.errors import EngineError

        wrapped = container.get_wrapped_container()
        reaper_log = wrapped.logs(tail=20).decode(errors="replace")
        raise EngineError(
            f"the reaper {wrapped.name} did not acknowledge this session after {REAPER_ATTEMPTS} attempts "
            f"({'; '.join(failures)}): containers of an interrupted run would be left behind. "
            f"Its log:\n{reaper_log}",
            "check that 127.0.0.1 reaches published ports (docker-proxy running, no firewall on loopback); "
            "`stackcheck images build ryuk` rebuilds the reaper",
        )

    wrapper._stackcheck_acked = True  # type: ignore[attr-defined]
    return wrapper


def await_ack(sock: socket.socket, timeout: float) -> str | None:
    """Read until the reaper's ``ACK`` line: None when it came, else what happened instead."""
    deadline, received = time.monotonic() + timeout, b""
    while b"ACK\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"no ACK within {timeout:g} s"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(64)
        except TimeoutError:
            continue
        except OSError as exc:
            return f"connection failed: {exc}"
        if not chunk:
            return f"connection closed before an ACK (received {received!r})"
        received += chunk
    return None
