"""One stack shared by several processes of one test run (pytest-xdist workers), and the lock
that keeps measurements from sharing the machine with other traffic.

    run = SharedRun(directory, worker="gw0", workers=2)
    state = run.acquire(boot)     # the first caller boots (under an inter-process lock); the others attach
    ...
    run.finish(remove)            # each process once, at its end: the last one removes the stack

The state file (``state.json`` in ``directory``, one per test run) holds what another process
needs to attach: the run id, the container of each instance, the reaper that covers the run.
The reaper (Ryuk) removes everything carrying the booting process's session label once no
client has been connected to it for its reconnection timeout (10 s): every process that uses
the stack connects to it with that label (a ``ReaperLease``), so a booting worker that ends
early does not take the stack away from the others, while a killed run is still reaped.

``TrafficLock`` is a readers-writer lock over ``fcntl.flock``: ordinary tests hold it shared,
an exclusive measurement (a rate-limit probe, a load run, a fault on the shared stack) holds
it alone. A writer waiting at the turnstile stops new readers, so it is never starved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from testcontainers.core.container import DockerContainer

from stackcheck import engine
from stackcheck.errors import StackError
from stackcheck.stack import SERVICE_LABEL, TOXIPROXY_API_PORT, ServiceContainer, ServiceHandle, Stack
from stackcheck.stackfile import StackSpec
from stackcheck.tcdefaults import REAPER_ACK_TIMEOUT, await_ack
from stackcheck.tls import RunCA
from stackcheck.toxiproxy import ToxiproxyClient


def run_directory(testrunuid: str) -> Path:
    """The folder one pytest-xdist run's processes share (the controller removes it at the end)."""
    return Path(tempfile.gettempdir()) / f"stackcheck-xdist-{testrunuid}"


@dataclass(frozen=True)
class ReaperAddress:
    """Where the booting process's reaper listens, and the session label it removes."""

    host: str
    port: int
    label: str  # the filter line's value: org.testcontainers.session-id=...


@dataclass
class SharedState:
    run_id: str | None = None
    booted_by: str | None = None
    containers: dict[str, str] = field(default_factory=dict)  # instance -> container id
    reaper: ReaperAddress | None = None
    kept: bool = False  # --keep-stack: nobody removes it
    live: bool = False
    error: str | None = None  # the boot failed: the others fail with it instead of booting again
    users: list[str] = field(default_factory=list)  # processes that attached (or booted)
    done: list[str] = field(default_factory=list)  # processes that finished their session

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharedState:
        reaper = data.get("reaper")
        return cls(**{**data, "reaper": ReaperAddress(**reaper) if reaper else None})


@dataclass(frozen=True)
class Booted:
    """What the booting process reports of the stack it started."""

    run_id: str
    containers: dict[str, str]
    reaper: ReaperAddress | None
    kept: bool


class ReaperLease:
    """A connection to a reaper with its session label: while one is open, it removes nothing."""

    def __init__(self, address: ReaperAddress) -> None:
        self.address = address
        self._socket = socket.create_connection((address.host, address.port), timeout=REAPER_ACK_TIMEOUT)
        self._socket.sendall(f"label={address.label}\r\n".encode())
        problem = await_ack(self._socket, REAPER_ACK_TIMEOUT)
        if problem is not None:
            self._socket.close()
            raise StackError(
                f"the reaper at {address.host}:{address.port} did not acknowledge {address.label} ({problem})",
                "the shared stack could be removed under this worker; run without -n to get a stack of its own",
            )

    def close(self) -> None:
        self._socket.close()


class SharedRun:
    """The shared stack of one test run, as one of its processes sees it."""

    def __init__(self, directory: Path, worker: str, workers: int) -> None:
        self.directory, self.worker, self.workers = directory, worker, workers
        self.state_file = directory / "state.json"
        self.lease: ReaperLease | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[SharedState]:
        """The state, read and written back under the run's lock (held while a worker boots)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "state.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            try:
                yield state
            finally:  # also when the boot failed: the others must see its error
                tmp = self.state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(state), indent=2))
                tmp.replace(self.state_file)

    def read(self) -> SharedState:
        if not self.state_file.exists():
            return SharedState()
        return SharedState.from_dict(json.loads(self.state_file.read_text()))

    def acquire(self, boot: Callable[[], Booted]) -> SharedState:
        """The running stack's state: booted here if nobody has, else leased from its reaper."""
        with self._locked() as state:
            if state.error is not None:
                raise StackError(
                    f"the shared stack failed to boot in worker {state.booted_by}: {state.error}",
                    "read that worker's error above; `stackcheck up --stack FILE` boots it for a closer look",
                )
            if state.run_id is not None and not state.live:
                raise StackError(
                    f"the shared stack {state.run_id} was already removed",
                    "report this: every worker must finish first",
                )
            if state.run_id is None:
                state.booted_by = self.worker
                try:
                    booted = boot()
                except Exception as exc:
                    state.error = f"{type(exc).__name__}: {exc}"
                    raise
                state.run_id, state.containers, state.reaper, state.kept = (
                    booted.run_id,
                    booted.containers,
                    booted.reaper,
                    booted.kept,
                )
                state.live = True
            elif state.reaper is not None and self.lease is None:
                self.lease = ReaperLease(state.reaper)
            if self.worker not in state.users:
                state.users.append(self.worker)
            return state

    def finish(self, remove: Callable[[str], None]) -> SharedState:
        """This process is done; the last one to finish removes the stack (unless it is kept)."""
        with self._locked() as state:
            if self.worker not in state.done:
                state.done.append(self.worker)
            if state.live and len(state.done) >= self.workers:
                if not state.kept:
                    assert state.run_id is not None
                    remove(state.run_id)
                state.live = False
        if self.lease is not None:
            self.lease.close()
            self.lease = None
        return state

    def remove_leftover(self, remove: Callable[[str], None]) -> str | None:
        """At the very end (the controller): a stack no worker removed (one crashed) is removed now."""
        if not self.state_file.exists():
            return None
        with self._locked() as state:
            if not state.live or state.kept or state.run_id is None:
                return None
            remove(state.run_id)
            state.live = False
            return state.run_id


class TrafficLock:
    """Readers-writer lock between the processes of one run (``fcntl.flock``, released if one dies)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[Any]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / name).open("a") as handle:
            yield handle

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._open("traffic.lock") as rw:
            with self._open("traffic.turnstile") as turnstile:
                fcntl.flock(turnstile, fcntl.LOCK_EX)  # waits behind a writer that is waiting
                fcntl.flock(rw, fcntl.LOCK_SH)
                fcntl.flock(turnstile, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(rw, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._open("traffic.lock") as rw:
            with self._open("traffic.turnstile") as turnstile:
                fcntl.flock(turnstile, fcntl.LOCK_EX)
                fcntl.flock(rw, fcntl.LOCK_EX)  # the readers inside finish; no new one gets past the turnstile
                fcntl.flock(turnstile, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(rw, fcntl.LOCK_UN)


def current_reaper() -> ReaperAddress | None:
    """This process's reaper (testcontainers starts one per process), if it has one."""
    from testcontainers.core.container import Reaper
    from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

    container = Reaper._container
    if container is None or container._container is None:
        return None
    port = int(container.get_exposed_port(8080))
    return ReaperAddress(container.get_container_host_ip(), port, f"{LABEL_SESSION_ID}={SESSION_ID}")


class _AttachedContainer(ServiceContainer):
    """A container another process started, behind the interface of one this process started."""

    def __init__(self, wrapped: docker.models.containers.Container) -> None:
        DockerContainer.__init__(self, str(wrapped.attrs["Config"]["Image"]))
        self._container = wrapped

    def get_docker_client(self) -> Any:
        return DockerContainer.get_docker_client(self)


class AttachedStack(Stack):
    """A stack another process booted and still runs (a pytest-xdist worker's shared stack): the
    same handles, secrets, CA and links as the booting process has. ``detach()`` lets go of it;
    ``stop()`` would remove it for everyone."""

    @classmethod
    def attach(cls, spec: StackSpec, run_id: str, containers: dict[str, str]) -> AttachedStack:
        stack = cls(spec, run_id=run_id)
        credentials = stack.run_dir / "credentials.json"
        if not credentials.exists():
            raise StackError(
                f"run {run_id} has no {credentials}: it was removed, or booted as another user",
                "run the tests again; `stackcheck down --all` removes what is left of it",
            )
        stack.secrets = dict(json.loads(credentials.read_text())["secrets"])
        tls = stack.run_dir / "tls"
        stack.tls_files = {"ca": tls / "ca.pem", "cert": tls / "server.crt", "key": tls / "server.key"}
        files = stack.tls_files
        stack.ca = RunCA(
            files["ca"].read_bytes(), files["cert"].read_bytes(), files["key"].read_bytes(), spec.tls_hostnames
        )
        client = stack._client = engine.client()
        stack._networks = [client.networks.get(stack.network_name(name)) for name in spec.networks]
        try:
            for instance, container_id in containers.items():
                wrapped = client.containers.get(container_id)
                service = spec.services[wrapped.labels[SERVICE_LABEL]]
                stack._handles[instance] = ServiceHandle(instance, service, _AttachedContainer(wrapped))
        except docker.errors.NotFound as exc:
            raise StackError(f"a container of run {run_id} is gone: {exc}", "run the tests again") from exc
        if spec.proxy is not None:
            proxy = stack.service(spec.proxy)
            stack._toxiproxy = ToxiproxyClient(f"http://127.0.0.1:{proxy.port(TOXIPROXY_API_PORT)}")
        return stack


def detach(stack: Stack) -> None:
    """Let go of a shared stack without removing it (its own clients only)."""
    if stack._toxiproxy is not None:
        stack._toxiproxy.close()
        stack._toxiproxy = None
