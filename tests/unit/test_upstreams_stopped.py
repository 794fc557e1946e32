"""The 502 probe's upstream stop: reverted on every exit, awaited healthy unless the run is ending."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from stackcheck.compliance import headers
from stackcheck.interrupt import Terminated


class FakeContainer:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def stop(self, timeout: int) -> None:
        self.log.append(f"stop {self.name}")

    def start(self) -> None:
        self.log.append(f"start {self.name}")


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    events: list[str] = []
    monkeypatch.setattr(headers, "upstream_services", lambda stack: ["backend"])
    monkeypatch.setattr(headers, "_await_healthy", lambda stack, handles, timeout: events.append("awaited"))
    return events


def stack(log: list[str]) -> Any:
    handles = [SimpleNamespace(docker=FakeContainer(log, f"backend-{i}")) for i in (1, 2)]
    return SimpleNamespace(instances=lambda service: handles)


def test_a_normal_exit_starts_the_upstreams_and_awaits_them(log: list[str]) -> None:
    with headers.upstreams_stopped(stack(log)):
        log.append("probe")
    assert log == ["stop backend-1", "stop backend-2", "probe", "start backend-1", "start backend-2", "awaited"]


def test_a_failed_probe_still_awaits_them_for_the_checks_that_follow(log: list[str]) -> None:
    with pytest.raises(RuntimeError), headers.upstreams_stopped(stack(log)):
        raise RuntimeError("probe failed")
    assert log[-3:] == ["start backend-1", "start backend-2", "awaited"]


def test_an_interrupted_run_starts_them_and_does_not_wait(log: list[str]) -> None:
    with pytest.raises(Terminated), headers.upstreams_stopped(stack(log)):
        raise Terminated(15)
    assert log[-2:] == ["start backend-1", "start backend-2"]
    assert "awaited" not in log
