"""testcontainers defaults: loopback-only ports, docker_host mode, user overrides win."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading

import pytest

from stackcheck import tcdefaults
from stackcheck.errors import EngineError
from stackcheck.tcdefaults import LOOPBACK, loopback_bindings


def test_unbound_ports_bind_to_loopback() -> None:
    assert loopback_bindings({"8080": None, "5432/tcp": 15432}) == {
        "8080": (LOOPBACK,),
        "5432/tcp": (LOOPBACK, 15432),
    }


def test_explicit_address_is_left_alone() -> None:
    assert loopback_bindings({"80": ("10.0.0.5", 80)}) == {"80": ("10.0.0.5", 80)}
    assert loopback_bindings(None) is None


def _config_after_import(env: dict[str, str]) -> str:
    code = (
        "import contextlib, stackcheck\n"
        "from stackcheck import engine\n"
        "with contextlib.suppress(stackcheck.EngineError):\n"
        "    engine.client(timeout=1)  # first talk to the engine: the defaults apply, engine or not\n"
        "from testcontainers.core.config import testcontainers_config as c\n"
        "print(c.tc_host_override, c.connection_mode_override.value, c.ryuk_image)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TC_", "TESTCONTAINERS_", "RYUK_"))}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_changes_nothing() -> None:
    code = "import os, stackcheck, stackcheck.fixtures.plugin; print(os.environ.get('TC_HOST'))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TC_", "TESTCONTAINERS_", "RYUK_"))}
    env = {**clean, "STACKCHECK_IMAGES": "/nonexistent/images.toml"}  # a read at import would fail
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_defaults_apply_when_stackcheck_first_talks_to_the_engine() -> None:
    host, mode, ryuk = _config_after_import({}).split()
    assert (host, mode) == ("127.0.0.1", "docker_host")
    assert ryuk.startswith("stackcheck/ryuk:")


def test_user_environment_wins() -> None:
    env = {
        "TC_HOST": "127.0.0.2",
        "TESTCONTAINERS_CONNECTION_MODE": "bridge_ip",
        "TESTCONTAINERS_RYUK_CONTAINER_IMAGE": "mirror.local/ryuk:0.8.1",
    }
    assert _config_after_import(env).split() == ["127.0.0.2", "bridge_ip", "mirror.local/ryuk:0.8.1"]


class _FakeContainer:
    """The two lookups the re-registration makes, aimed at a loopback server of the test's own."""

    def __init__(self, port: int) -> None:
        self.port = port

    def get_container_host_ip(self) -> str:
        return LOOPBACK

    def get_exposed_port(self, _: int) -> int:
        return self.port

    def get_wrapped_container(self) -> object:
        class Wrapped:
            name = "fake-reaper"

            def logs(self, tail: int) -> bytes:
                return b"Started!\n"

        return Wrapped()


def _ack_server(answers: bool) -> tuple[socket.socket, list[bytes]]:
    """A listener that reads one filter line per client and, when ``answers``, sends ACK."""
    server = socket.create_server((LOOPBACK, 0))
    lines: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                lines.append(conn.recv(256))
                if answers:
                    conn.sendall(b"ACK\n")

    threading.Thread(target=serve, daemon=True).start()
    return server, lines


def _reaper_class(silent: socket.socket, port: int) -> type:
    """A stand-in for testcontainers' Reaper whose first connection is lost: no ACK ever comes."""

    class FakeReaper:
        _socket: socket.socket | None = None
        _container = _FakeContainer(port)

        @classmethod
        def _create_instance(cls) -> str:
            cls._socket = silent
            return "instance"

    return FakeReaper


def test_a_lost_registration_is_sent_again_until_the_reaper_acknowledges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcdefaults, "REAPER_ACK_TIMEOUT", 0.2)
    server, lines = _ack_server(answers=True)
    ours, theirs = socket.socketpair()
    reaper = _reaper_class(ours, server.getsockname()[1])
    with server, theirs:
        assert tcdefaults._acknowledged(reaper._create_instance.__func__)(reaper) == "instance"
        assert reaper._socket is not ours  # the live connection is the acknowledged one
        assert lines
        assert lines[0].startswith(b"label=org.testcontainers.session-id=")
        reaper._socket.close()


def test_a_reaper_that_never_acknowledges_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcdefaults, "REAPER_ACK_TIMEOUT", 0.1)
    server, lines = _ack_server(answers=False)
    ours, theirs = socket.socketpair()
    reaper = _reaper_class(ours, server.getsockname()[1])
    with server, theirs, pytest.raises(EngineError) as caught:
        tcdefaults._acknowledged(reaper._create_instance.__func__)(reaper)
    assert f"after {tcdefaults.REAPER_ATTEMPTS} attempts" in str(caught.value)
    assert "no ACK within 0.1 s" in str(caught.value)
    assert "Started!" in str(caught.value)
    assert len(lines) == tcdefaults.REAPER_ATTEMPTS - 1  # every re-registration reached the server


def test_await_ack_names_a_closed_connection() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.sendall(b"ERR")
        theirs.close()
        assert tcdefaults.await_ack(ours, 1) == "connection closed before an ACK (received b'ERR')"
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"AC")
        theirs.sendall(b"K\n")
        assert tcdefaults.await_ack(ours, 1) is None
