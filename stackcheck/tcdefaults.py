"""testcontainers defaults for stackcheck, applied when it first talks to the engine, each
overridable by the user's env.

- Connection mode ``docker_host`` and host ``127.0.0.1``: machines with ``/.dockerenv`` make
  testcontainers guess it runs inside a container and aim at the bridge gateway instead.
- The reaper image is the one ``stackcheck images build`` makes, so Ryuk stays on offline.
- Every published port binds to 127.0.0.1: testcontainers publishes on all interfaces, and a
  stack under test must never be reachable from outside the machine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

LOOPBACK = "127.0.0.1"
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
