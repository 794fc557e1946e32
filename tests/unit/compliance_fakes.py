"""In-process stand-ins for compliance unit tests: an HTTP target answered by a handler (no
socket) and a stack with given containers and spec (nothing booted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx

from stackcheck.target import HttpTarget


class MockTarget(HttpTarget):
    """An HttpTarget whose clients are answered by ``handler`` in process."""

    handler: Callable[[httpx.Request], httpx.Response]

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        super().__init__("https://edge.invalid", booted=True)
        object.__setattr__(self, "handler", handler)

    def http(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        kwargs.pop("limits", None)  # a mock transport has no connection pool
        return httpx.Client(base_url=self.base_url, transport=httpx.MockTransport(self.handler), **kwargs)


@dataclass
class FakeStack:
    """What checks read of a booted stack: its containers (``handles``), its spec and its edge."""

    containers: list[Any] = field(default_factory=list)
    spec: Any = field(
        default_factory=lambda: SimpleNamespace(entry_service=None, services={}, links={}, health_path="/api/health")
    )
    target: HttpTarget | None = None

    def handles(self) -> list[Any]:
        return list(self.containers)

    def instances(self, service: str) -> list[Any]:
        return [c for c in self.containers if c.service.name == service]

    def http(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        assert self.target is not None, "this fake stack has no edge"
        return self.target.http(timeout, **kwargs)


def fake_handle(service: str, image: str = "toolbox", docker: Any = None) -> Any:
    """A container of ``service`` that must not be inspected (no docker attribute unless given)."""
    handle = SimpleNamespace(name=service, service=SimpleNamespace(name=service, image=image))
    if docker is not None:
        handle.docker = docker
    return handle
