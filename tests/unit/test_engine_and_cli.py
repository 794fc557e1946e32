"""Engine discovery and the CLI's error path: one clear message and a non-zero exit."""

from __future__ import annotations

from types import SimpleNamespace

import docker.errors
import pytest

from stackcheck import cli, engine
from stackcheck.errors import EngineError


def test_unreachable_remote_engine_is_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(EngineError, match=r"DOCKER_HOST=tcp://127.0.0.1:9 does not answer") as err:
        engine.ensure_engine()
    assert "unset DOCKER_HOST" in err.value.fix


def test_client_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(EngineError, match="stackcheck engine ensure"):
        engine.client(timeout=2)


def test_cli_reports_errors_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert cli.main(["images", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stackcheck: error: no Docker engine answers")
    assert "Traceback" not in err


class _Removable:
    def __init__(self, name: str, gone: bool = False) -> None:
        self.name, self.gone, self.removed = name, gone, False

    def remove(self, **_: object) -> None:
        if self.gone:  # a concurrent teardown was first
            raise docker.errors.NotFound(f"{self.name} is gone")
        self.removed = True


class _Listing:
    def __init__(self, items: list[_Removable]) -> None:
        self.items = items

    def list(self, **_: object) -> list[_Removable]:
        return self.items


def test_down_says_how_many_containers_networks_and_volumes_it_removed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    volumes = [_Removable("r1-data"), _Removable("r1-backups"), _Removable("r1-raced", gone=True)]
    fake = SimpleNamespace(
        containers=_Listing([_Removable("r1-api"), _Removable("r1-db")]),
        networks=_Listing([_Removable("r1-internal")]),
        volumes=_Listing(volumes),
    )
    monkeypatch.setattr(cli.engine, "client", lambda: fake)
    assert cli.main(["down", "r1"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 containers, 1 networks and 2 volumes (r1)" in out, out
    assert [v.removed for v in volumes] == [True, True, False]
