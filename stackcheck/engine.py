"""Find a Docker engine, or install and start one where we are allowed to.

An engine that already answers is never touched. Where none answers and we are root on
Debian, ``docker.io`` is installed and ``dockerd`` started in the background.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from stackcheck import tcdefaults
from stackcheck.errors import EngineError
from stackcheck.waiting import wait_until

DEFAULT_SOCKET = "/var/run/docker.sock"
DOCKERD_LOG = Path("/var/log/stackcheck-dockerd.log")


@dataclass(frozen=True)
class EngineInfo:
    host: str
    version: str
    api_version: str
    started_by_us: bool


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_SOCKET}")


def client(timeout: int = 120) -> docker.DockerClient:
    """A Docker SDK client for the configured engine; raises EngineError when it does not answer.

    The first call applies stackcheck's testcontainers defaults (loopback, reaper image)."""
    tcdefaults.apply()
    try:
        cli = docker.DockerClient(base_url=docker_host(), timeout=timeout)
        cli.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EngineError(
            f"no Docker engine answers at {docker_host()} ({type(exc).__name__})",
            "run `stackcheck engine ensure` (as root it installs and starts dockerd), "
            "or start your engine / set DOCKER_HOST",
        ) from exc
    return cli


def _answers(timeout: int = 3) -> EngineInfo | None:
    try:
        cli = docker.DockerClient(base_url=docker_host(), timeout=timeout)
        version = cli.version()
        cli.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return None
    return EngineInfo(docker_host(), version.get("Version", "?"), version.get("ApiVersion", "?"), False)


def _is_local_default() -> bool:
    return docker_host() == f"unix://{DEFAULT_SOCKET}"


def _install_docker_io() -> None:
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        raise EngineError(
            "dockerd is not installed and this is not a Debian system stackcheck can install it on",
            "install Docker Engine for your OS, start it, then run again",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker.io"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
            raise EngineError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}",
                "check that the Debian package mirror is reachable, then run `stackcheck engine ensure` again",
            )


def _dockerd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, check=False).returncode == 0


def _start_dockerd() -> None:
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        # --ip: ports published without an explicit address bind to loopback, not 0.0.0.0.
        subprocess.Popen(
            ["dockerd", "--ip", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def ensure_engine(install: bool = True, timeout: float = 60.0) -> EngineInfo:
    """Return the running engine, starting (and if needed installing) one when allowed."""
    info = _answers()
    if info is not None:
        return info
    if not _is_local_default():
        raise EngineError(
            f"the engine at DOCKER_HOST={docker_host()} does not answer",
            "start that engine, or unset DOCKER_HOST to use a local one",
        )
    if os.geteuid() != 0:
        raise EngineError(
            f"no Docker engine answers at {docker_host()} and stackcheck is not root, so it cannot start one",
            "start Docker (e.g. `sudo systemctl start docker`) or run `sudo stackcheck engine ensure`",
        )
    if shutil.which("dockerd") is None:
        if not install:
            raise EngineError("dockerd is not installed", "run `stackcheck engine ensure` (installs docker.io)")
        _install_docker_io()
    if not _dockerd_running():
        _start_dockerd()
    info = wait_until(_answers, timeout, interval_s=0.5)
    if info is not None:
        return EngineInfo(info.host, info.version, info.api_version, started_by_us=True)
    tail = "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-15:]) if DOCKERD_LOG.exists() else ""
    raise EngineError(
        f"dockerd was started but its API did not answer within {timeout:.0f}s; log tail:\n{tail}",
        f"read {DOCKERD_LOG}; a common cause is a stale /var/run/docker.pid or no cgroup support",
    )
