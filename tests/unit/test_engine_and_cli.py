"""Engine discovery and the CLI's error path: one clear message and a non-zero exit."""

from __future__ import annotations

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
