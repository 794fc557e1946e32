"""testcontainers defaults: loopback-only ports, docker_host mode, user overrides win."""

from __future__ import annotations

import os
import subprocess
import sys

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
