"""Parallel boot on a fake stack graph (no Docker): every container is created at once, then the
services start wave after wave, a service only once all its dependencies (and the proxy, for a
link client) are ready, the services of a wave and the replicas of a service together. A
failure is one error and stops the rest."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.errors import StackError
from stackcheck.stack import NotReady, Stack
from stackcheck.stackfile import ServiceSpec

GRAPH = """
[stack]
name = "graph"
proxy = "proxy"
[networks.net]
[services.db]
image = "postgres"
networks = { net = [] }
[services.cache]
image = "redis"
networks = { net = [] }
[services.proxy]
image = "toxiproxy"
networks = { net = [] }
[services.replica]
image = "postgres"
networks = { net = [] }
depends_on = ["db"]
[services.api]
image = "nginx"
replicas = 2
networks = { net = [] }
depends_on = ["replica", "cache"]
[services.edge]
image = "nginx"
networks = { net = [] }
depends_on = ["api"]
[links."api->cache"]
upstream = "cache:6379"
listen = 16379
"""
READY_S = {"db": 0.3, "cache": 0.05, "proxy": 0.1, "replica": 0.1, "api": 0.2, "edge": 0.05}
DEPENDS = {"replica": {"db"}, "api": {"replica", "cache", "proxy"}, "edge": {"api"}}


class Events:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, float]] = []

    def add(self, what: str, name: str) -> None:
        with self.lock:
            self.log.append((what, name, time.monotonic() - self.started))

    def at(self, what: str, name: str) -> float:
        return next(t for w, n, t in self.log if w == what and n == name)

    def names(self, what: str) -> list[str]:
        return [n for w, n, _ in self.log if w == what]


class FakeHandle:
    """A service instance whose container is created, started and ready after READY_S."""

    def __init__(self, name: str, service: ServiceSpec, events: Events, fail: str | None) -> None:
        self.name, self.service, self.events, self.fail = name, service, events, fail
        self.container = self
        self.docker = self

    def create(self) -> None:
        self.events.add("create", self.name)

    def start(self) -> None:
        self.events.add("start", self.name)

    def await_ready(self, timeout_s: float, cancelled: tuple[threading.Event, ...] = ()) -> float:
        deadline = time.monotonic() + READY_S[self.service.name]
        while time.monotonic() < deadline:
            if any(event.is_set() for event in cancelled):
                self.events.add("cancelled", self.name)
                raise StackError("the stack is being removed", "nothing to do")
            time.sleep(0.01)
        if self.service.name == self.fail:
            raise NotReady(f"{self.name} is exited (exit code 1) while starting", "read its log")
        self.events.add("ready", self.name)
        return READY_S[self.service.name]


def fake_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str | None = None) -> tuple[Stack, Events]:
    (tmp_path / "stack.toml").write_text(GRAPH)
    stack = Stack(stackfile.load(tmp_path / "stack.toml"))
    events = Events()

    def handles(svc: ServiceSpec, tag: str) -> list[Any]:
        return [FakeHandle(instance, svc, events, fail) for instance in svc.instances()]

    monkeypatch.setattr(stack, "_service_handles", handles)
    monkeypatch.setattr(stack, "_create_links", lambda: events.add("links", "proxy"))
    return stack, events


def instances_of(service: str) -> list[str]:
    return [f"{service}-1", f"{service}-2"] if service == "api" else [service]


def test_services_start_once_their_dependencies_are_ready_and_a_wave_starts_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, events = fake_stack(tmp_path, monkeypatch)
    stack._boot_waves({name: f"tag-{name}" for name in stack.spec.services})
    instances = [i for name in stack.spec.services for i in instances_of(name)]
    assert sorted(events.names("create")) == sorted(instances)
    assert max(events.at("create", i) for i in instances) < min(events.at("start", i) for i in instances)
    assert sorted(events.names("ready")) == sorted(instances), "every instance was awaited"
    for service, deps in DEPENDS.items():
        for instance in instances_of(service):
            for dep in deps:
                for dep_instance in instances_of(dep):
                    assert events.at("ready", dep_instance) <= events.at("start", instance), (
                        f"{instance} started before {dep_instance} was ready: {events.log}"
                    )
    assert events.at("links", "proxy") <= min(events.at("start", i) for i in ("api-1", "api-2"))
    # Together: the first wave's fast services are ready before the slow one, started alongside.
    assert events.at("ready", "cache") < events.at("ready", "db")
    assert max(events.at("start", s) for s in ("db", "cache", "proxy")) < events.at("ready", "cache")
    assert events.at("start", "api-2") < events.at("ready", "api-1"), "replicas start together"
    # The wave boot is as long as its critical path (db, replica, api, edge), not the sum of all.
    critical = READY_S["db"] + READY_S["replica"] + READY_S["api"] + READY_S["edge"]
    assert events.at("ready", "edge") < critical + 0.3, events.log


def test_a_failing_service_is_one_error_its_wave_stops_waiting_and_no_later_wave_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(READY_S, "proxy", 5.0)  # still starting when cache fails
    stack, events = fake_stack(tmp_path, monkeypatch, fail="cache")
    started = time.monotonic()
    with pytest.raises(NotReady, match=r"^cache is exited \(exit code 1\) while starting"):
        stack._boot_waves({name: f"tag-{name}" for name in stack.spec.services})
    assert time.monotonic() - started < 1.0, "the others must stop waiting at once"
    assert {"proxy", "db"} <= set(events.names("cancelled"))
    assert not {"replica", "api-1", "api-2", "edge"} & set(events.names("start"))
