"""Stack: boot a stack file's services with testcontainers and hand out typed handles.

    with Stack.from_file("stacks/promptcard/stack.toml") as stack:
        stack.http().get("/api/health")
        with stack.link("backend->redis").down():
            ...

Every container and network carries the run id label (``org.stackcheck.run-id``) and the
testcontainers session label, so the reaper removes them if this process dies, and
``stackcheck down --all`` finds leftovers of runs that kept their stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import httpx
import psycopg
import redis
from testcontainers.core.config import testcontainers_config as tc_config
from testcontainers.core.container import DockerContainer, Reaper
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

from stackcheck import engine, gpu, images, resources, stackfile
from stackcheck.errors import StackcheckError, StackError
from stackcheck.stackfile import PLACEHOLDER, LinkSpec, Readiness, ServiceSpec, StackSpec
from stackcheck.target import HttpTarget
from stackcheck.tls import RunCA
from stackcheck.toxiproxy import ToxiproxyClient
from stackcheck.volumes import create_volumes, remove_volumes
from stackcheck.waiting import wait_until

RUN_LABEL = "org.stackcheck.run-id"
STACK_LABEL = "org.stackcheck.stack"
SERVICE_LABEL = "org.stackcheck.service"
KEPT_LABEL = "org.stackcheck.kept"  # left running on purpose (`stackcheck up`, --keep-stack): no reaper
RUNS_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stackcheck" / "runs"
log = logging.getLogger(__name__)
DEFAULT_STACK = resources.reference_stack()
TOXIPROXY_API_PORT = 8474
# While a service starts, stackcheck runs its image's healthcheck itself this often (one docker
# exec costs ~70 ms wall, ~10 ms of dockerd CPU) instead of waiting for Docker's own first run.
READY_POLL_S = 0.1
# Synthetic traffic (load runs, chaos probes) carries the run's "load-token" secret in this
# header; the reference edge exempts it from per-client rate limits (see promptcard.conf).
SYNTHETIC_HEADER = "X-Stackcheck-Load"
SYNTHETIC_SECRET = "load-token"


class ServiceContainer(DockerContainer):
    """A testcontainers container joined to several networks *before* it starts.

    Engines before API 1.44 accept one network at create time; nginx must already see the
    internal network when it resolves its upstreams at start. testcontainers' own ``start``
    creates, then starts: the client it gets from ``get_docker_client`` joins the other
    networks in between (and creates nothing once the stack is being torn down), and leaves
    the start to the stack: every container of a stack is created at once, each started when
    its dependencies are ready (a create and its network joins take ~0.5 s).
    """

    def create(self) -> None:
        super().start()  # testcontainers' create; _JoiningClient.start does not start it

    def __init__(self, image: str, attachments: list[tuple[str, list[str]]], cancelled: threading.Event) -> None:
        super().__init__(image)
        (first, aliases), *others = attachments
        self.with_network(_NetworkName(first)).with_network_aliases(*aliases)  # type: ignore[arg-type]
        self._joining = _JoiningClient(super().get_docker_client(), others, cancelled)

    def get_docker_client(self) -> Any:
        return self._joining


@dataclass(frozen=True)
class _NetworkName:
    """What testcontainers reads of a network at create time: its name (the stack made the network)."""

    name: str


class _JoiningClient:
    """testcontainers' docker client for one container: after create, join the other networks."""

    def __init__(self, inner: Any, others: list[tuple[str, list[str]]], cancelled: threading.Event) -> None:
        self._inner, self._others, self._cancelled = inner, others, cancelled

    def create(self, image: str, **kwargs: Any) -> Any:
        if self._cancelled.is_set():
            raise StackError("the stack is being removed", "nothing to do: it was interrupted while booting")
        container = self._inner.create(image, **kwargs)
        if self._cancelled.is_set():  # the teardown may have listed the run's containers before this one existed
            container.remove(force=True, v=True)
            raise StackError("the stack is being removed", "nothing to do: it was interrupted while booting")
        for network, aliases in self._others:
            self._inner.client.networks.get(network).connect(container, aliases=aliases)
        return container

    def start(self, container: Any) -> None:
        """Not yet: Stack._start_wave starts the container when its wave comes."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class ServiceHandle:
    """One running container of a service (a replica has its own handle)."""

    name: str
    service: ServiceSpec
    container: ServiceContainer

    @property
    def docker(self) -> docker.models.containers.Container:
        return self.container.get_wrapped_container()

    def port(self, container_port: int) -> int:
        """The 127.0.0.1 port a published container port is reachable on."""
        if container_port not in self.service.ports:
            raise StackError(
                f"port {container_port} of {self.name} is not published",
                f"add it to ports of [services.{self.service.name}] (published: {list(self.service.ports)})",
            )
        return int(self.container.get_exposed_port(container_port))

    def logs(self, tail: int = 30) -> str:
        return str(self.docker.logs(tail=tail).decode(errors="replace"))

    def health(self) -> str:
        return container_health(self.docker)

    def await_ready(self, timeout_s: float, cancelled: tuple[threading.Event, ...] = ()) -> float:
        """Poll until the container is ready (``service.ready``): running, and for ``healthcheck``
        its image's healthcheck passes. Seconds waited; NotReady when it exited, turned unhealthy
        or ran out of time; StackError at once when one of ``cancelled`` is set."""
        if self.service.ready is Readiness.HEALTHCHECK and not _healthcheck_test(self.docker):
            raise NotReady(
                f"{self.name}: its image {self.container.image} has no HEALTHCHECK",
                f'add one to the image, or set ready = "running" in [services.{self.service.name}]',
            )
        started = time.monotonic()
        last = "not started"

        def ready() -> bool | None:
            nonlocal last
            if any(event.is_set() for event in cancelled):
                raise StackError("the stack is being removed", "nothing to do: another service failed, or a signal")
            if self.service.ready is Readiness.HEALTHCHECK:
                last = self.health()
            else:
                self.docker.reload()
                last = "healthy" if self.docker.attrs["State"]["Running"] else str(self.docker.status)
            if last in ("exited", "dead", "unhealthy"):
                code = self.docker.attrs["State"].get("ExitCode")
                raise NotReady(
                    f"{self.name} is {last}{f' (exit code {code})' if last == 'exited' else ''} while starting; "
                    f"its last log lines:\n{self.logs(15)}",
                    "fix what its log says; `stackcheck up --stack FILE` boots the stack for a closer look",
                )
            return True if last == "healthy" else None

        if wait_until(ready, timeout_s, READY_POLL_S) is None:
            said = run_healthcheck(self.docker) if self.service.ready is Readiness.HEALTHCHECK else None
            check = f"; its healthcheck: {said}" if said else ""
            raise NotReady(
                f"{self.name} was not ready within {timeout_s:.0f}s (still {last}{check}); its last log lines:\n"
                f"{self.logs(15)}",
                f"raise ready_timeout_s of [services.{self.service.name}] if it is merely slow",
            )
        return time.monotonic() - started


def _create(handle: ServiceHandle, failed: threading.Event) -> None:
    if not failed.is_set():
        handle.container.create()


class NotReady(StackError):
    """A service that exited, turned unhealthy or ran out of time while it started (with its logs)."""


def container_health(container: docker.models.containers.Container) -> str:
    """The container's health read fresh from the engine: ``healthy`` when it runs and its image's
    healthcheck (if any) passes, else what it is (``exited``, ``starting``, ``unhealthy``, ...).

    Docker runs a HEALTHCHECK once per interval, the first time one interval after the start
    (``--start-interval`` needs Docker 25, the engines here are 20.10): while Docker still says
    ``starting``, the image's check is run here (docker exec) for an answer now, not in 2 s."""
    container.reload()
    state = container.attrs["State"]
    if not state["Running"]:
        return str(state["Status"])
    status = state.get("Health", {}).get("Status")
    if status is None:
        return "healthy"
    if status == "starting" and run_healthcheck(container) is None:
        return "healthy"
    return str(status)


def _healthcheck_test(container: docker.models.containers.Container) -> list[str]:
    test = list((container.attrs["Config"].get("Healthcheck") or {}).get("Test") or [])
    return [] if not test or test[0] == "NONE" else test


def run_healthcheck(container: docker.models.containers.Container) -> str | None:
    """Run the image's healthcheck command in the container now, as Docker would (same user and
    environment): None when it passes, else what it said."""
    kind, *args = _healthcheck_test(container) or ["NONE"]
    if kind == "NONE":
        return None
    shell = container.attrs["Config"].get("Shell") or ["/bin/sh", "-c"]
    argv = args if kind == "CMD" else [*shell, args[0]]
    try:
        code, output = container.exec_run(argv)
    except docker.errors.APIError as exc:  # e.g. 409: it stopped meanwhile
        return str(exc.explanation or exc)
    return None if code == 0 else f"exit {code}: {output.decode(errors='replace').strip()[-300:]}"


@dataclass
class LinkHandle:
    """A dependency link through Toxiproxy. Faults on it live in ``stackcheck.faults``."""

    spec: LinkSpec
    toxiproxy: ToxiproxyClient

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def enabled(self) -> bool:
        return self.toxiproxy.get(self.name).enabled

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Cut the link (connections refused) and restore it on exit, whatever happens inside."""
        self.toxiproxy.set_enabled(self.name, False)
        try:
            yield
        finally:
            self.toxiproxy.set_enabled(self.name, True)


class Stack:
    def __init__(
        self,
        spec: StackSpec,
        run_id: str | None = None,
        reap: bool = True,
        volumes: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        # [volumes] name -> engine volume: adopted ones (kept by an earlier stack) are not created.
        self._adopted_volumes = dict(volumes or {})
        self.volumes: dict[str, str] = {}
        self.run_id = run_id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        self.reap = reap
        self.run_dir = RUNS_DIR / self.run_id
        self.secrets: dict[str, str] = {}
        self.ca: RunCA | None = None
        self._handles: dict[str, ServiceHandle] = {}
        self._networks: list[docker.models.networks.Network] = []
        self._toxiproxy: ToxiproxyClient | None = None
        self._client: docker.DockerClient | None = None
        self._cancelled = threading.Event()
        self.boot_seconds: float | None = None
        self.devices: dict[str, gpu.GpuChoice] = {}  # GPU-optional services: which device each got, and why

    @classmethod
    def from_file(cls, path: str | Path = DEFAULT_STACK, **kwargs: Any) -> Stack:
        return cls(stackfile.load(path), **kwargs)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Stack:
        started = time.monotonic()
        try:
            self._client = engine.client()
            catalog = images.Catalog.load().for_stack(self.spec)
            tags = {name: images.resolve(svc.image, self._client, catalog) for name, svc in self.spec.services.items()}
            wants_gpu = [svc for svc in self.spec.services.values() if svc.gpu is not gpu.GpuMode.OFF]
            info = self._client.info() if wants_gpu else {}
            self.devices = {svc.name: gpu.choose(svc.gpu, info, svc.name) for svc in wants_gpu}
            for choice in self.devices.values():
                log.info(choice.reason)
            if self.reap and tc_config.ryuk_image == catalog.tag("ryuk"):
                images.require("ryuk", self._client, catalog)
            # `stackcheck up` keeps the stack after this process exits: no reaper for it then.
            tc_config.ryuk_disabled = tc_config.ryuk_disabled or not self.reap
            if not tc_config.ryuk_disabled:
                Reaper.get_instance()  # once, before services start in parallel threads
            self._prepare_run_dir()
            self._create_networks()
            self.volumes = create_volumes(
                self._client, self.run_id, self.spec.volumes, self.labels(), self._adopted_volumes
            )
            self._boot_waves(tags)
            if self.spec.entrypoint_url is not None:
                self._wait_for_entrypoint()
        except BaseException as exc:
            # Interrupted (SIGTERM, Ctrl-C): remove everything now, no logs to collect first.
            diagnostics = self._diagnostics() if isinstance(exc, Exception) else ""
            self.stop()
            if isinstance(exc, NotReady):
                raise NotReady(f"stack {self.spec.name} failed to boot: {exc.problem}", exc.fix) from exc
            if isinstance(exc, StackcheckError) or not isinstance(exc, Exception):
                raise
            raise StackError(
                f"stack {self.spec.name} failed to boot: {type(exc).__name__}: {exc}{diagnostics}",
                "read the service logs above; `stackcheck up --stack FILE` boots it for a closer look",
            ) from exc
        self.boot_seconds = time.monotonic() - started
        return self

    def stop(self, keep_volumes: Collection[str] = ()) -> dict[str, str]:
        """Remove every container, network, volume and file of this run; safe to call twice.
        ``keep_volumes``: [volumes] names left for a next stack (``Stack(volumes=...)``), returned
        as name -> engine volume."""
        kept = {name: self.volumes[name] for name in keep_volumes if name in self.volumes}
        self._cancelled.set()
        self._handles.clear()
        self._networks.clear()
        if self._toxiproxy is not None:
            self._toxiproxy.close()
            self._toxiproxy = None
        if self._client is not None:
            # By label, not by handle: a container whose create was in flight has no handle yet.
            remove_runs(self._client, self.run_id, keep_volumes=kept.values())
            remove_volumes(self._client, set(self._adopted_volumes.values()) - set(kept.values()))
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return kept

    def start_services(self, services: list[ServiceSpec], tags: dict[str, str]) -> None:
        """Start services into this running stack, in parallel, each ready when this returns: a drill
        rebuilding part of the stack, possibly from changed specs (its old containers removed first)."""
        handles = [h for svc in services for h in self._service_handles(svc, tags[svc.name])]
        self._parallel(_create, handles)
        self._parallel(self._start_instance, handles)

    def _boot_waves(self, tags: dict[str, str]) -> None:
        """Every container created at once, then started wave after wave: a wave is every service
        whose dependencies are all ready, its instances (replicas too) started together."""
        waves = self._waves()
        handles = {n: self._service_handles(self.spec.services[n], tags[n]) for wave in waves for n in wave}
        self._parallel(_create, [h for group in handles.values() for h in group])
        for wave in waves:
            log.info(f"starting {', '.join(wave)}")
            self._parallel(self._start_instance, [h for name in wave for h in handles[name]])
            if self.spec.proxy in wave:
                self._create_links()

    def _parallel(self, step: Callable[[ServiceHandle, threading.Event], None], handles: list[ServiceHandle]) -> None:
        """``step`` on every handle at once; the first failure is raised once the others stopped
        (``step`` gets the event that says another one failed)."""
        failed = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, len(handles)))
        futures = [pool.submit(step, handle, failed) for handle in handles]
        try:
            for future in as_completed(futures):
                failure = future.exception()
                if failure is not None:
                    failed.set()  # the others stop waiting for readiness
                    raise failure
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Interrupted: do not wait out the others' readiness. Removing their containers makes
                # their waits fail at once; a create still in flight sees _cancelled.
                self._cancelled.set()
                remove_runs(self._client, self.run_id, networks=False)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _start_instance(self, handle: ServiceHandle, failed: threading.Event) -> None:
        if failed.is_set() or self._cancelled.is_set():
            return
        handle.docker.start()
        waited = handle.await_ready(handle.service.ready_timeout_s, (self._cancelled, failed))
        log.debug(f"{handle.name} ready {waited:.2f}s after its start")

    def _waves(self) -> list[list[str]]:
        # A link's client must start after the proxy it talks through.
        done: set[str] = set()
        waves: list[list[str]] = []
        services = self.spec.services
        deps = {n: set(s.depends_on) for n, s in services.items()}
        for link in self.spec.links.values():
            if self.spec.proxy and link.client != self.spec.proxy:
                deps[link.client].add(self.spec.proxy)
        while len(done) < len(services):
            wave = sorted(n for n in services if n not in done and deps[n] <= done)
            if not wave:
                raise StackError(
                    "link clients and the proxy depend on each other", "the proxy must not depend on a link client"
                )
            waves.append(wave)
            done.update(wave)
        return waves

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)
        self.secrets = {name: secrets.token_urlsafe(24) for name in self.spec.secrets}
        self.ca = RunCA.issue(self.spec.tls_hostnames)
        tls_dir = self.run_dir / "tls"
        tls_dir.mkdir(exist_ok=True)
        self.tls_files = self.ca.write(tls_dir)
        creds = {"run_id": self.run_id, "secrets": self.secrets, "ca": str(self.tls_files["ca"])}
        (self.run_dir / "credentials.json").write_text(json.dumps(creds, indent=2))

    def _labels(self, **extra: str) -> dict[str, str]:
        kept = {} if self.reap else {KEPT_LABEL: "true"}
        return {RUN_LABEL: self.run_id, STACK_LABEL: self.spec.name, **kept, **extra}

    def labels(self, **extra: str) -> dict[str, str]:
        """Labels of a network, volume or container created for this run (also by a drill's hook):
        removed with the run (`stackcheck down`, Stack.stop) and by the reaper if this process dies."""
        labels = self._labels(**extra)
        if self.reap:
            labels[LABEL_SESSION_ID] = SESSION_ID
        return labels

    def volume(self, name: str) -> str:
        """The engine name of one of the stack's [volumes] in this run."""
        if name not in self.volumes:
            known = ", ".join(self.volumes) or "(none: the stack is not running or declares no [volumes])"
            raise StackError(f"stack {self.spec.name} has no volume {name!r}", f"use one of: {known}")
        return self.volumes[name]

    def _create_networks(self) -> None:
        assert self._client is not None
        for net in self.spec.networks.values():
            self._networks.append(
                self._client.networks.create(f"{self.run_id}-{net.name}", internal=net.internal, labels=self.labels())
            )

    def network_name(self, network: str) -> str:
        return f"{self.run_id}-{network}"

    def docker_network(self, network: str) -> docker.models.networks.Network:
        name = self.network_name(network)
        for net in self._networks:
            if net.name == name:
                return net
        raise StackError(
            f"stack {self.spec.name} has no network {network!r}", f"use one of: {', '.join(self.spec.networks)}"
        )

    def render(self, text: str) -> str:
        def replace(match: Any) -> str:
            kind, ref = match.group(1), match.group(2)
            problem = stackfile.placeholder_problem(self.spec, kind, ref)
            if problem:
                raise StackError(f"{self.spec.path}: {problem}", stackfile._PLACEHOLDER_FIX)
            if kind == "secret":
                return self.secrets[ref]
            if kind == "link":
                return f"{self.spec.proxy}:{self.spec.links[ref].listen_port}"
            target, *params = ref.split()
            host, _, port = target.rpartition(":")
            return "\n".join(
                f"server {i}:{port} {' '.join(params)};".replace(" ;", ";")
                for i in self.spec.services[host].instances()
            )

        return PLACEHOLDER.sub(replace, text)

    def _mounted_files(self, svc: ServiceSpec) -> list[tuple[Path, str]]:
        mounts = []
        for index, file in enumerate(svc.files):
            if file.tls is not None:
                mounts.append((self.tls_files[file.tls], file.path))
                continue
            text = file.template if file.template is not None else file.source.read_text()  # type: ignore[union-attr]
            host = self.run_dir / "files" / svc.name / f"{index}-{Path(file.path).name}"
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(self.render(text))
            # Readable by the container's non-root user; the run dir itself stays 0700.
            host.chmod(0o444)
            mounts.append((host, file.path))
        return mounts

    def _service_handles(self, svc: ServiceSpec, tag: str) -> list[ServiceHandle]:
        """One handle per instance, registered in start order before anything is created, so that
        a failed start is still cleaned up."""
        mounts = self._mounted_files(svc)
        env = {key: self.render(value) for key, value in svc.env.items()}
        tmpfs = tmpfs_options(svc.user or self._image_user(tag)) if svc.tmpfs else ""
        handles = []
        for instance in svc.instances():
            attachments = [
                (self.network_name(net), [instance, *([svc.name] if svc.replicas > 1 else []), *aliases])
                for net, aliases in svc.networks.items()
            ]
            container = ServiceContainer(tag, attachments, self._cancelled).with_name(f"{self.run_id}-{instance}")
            for key, value in env.items():
                container.with_env(key, value)
            for host, target in mounts:
                container.with_volume_mapping(str(host), target, "ro")
            for path in svc.tmpfs:
                container.tmpfs[path] = tmpfs  # Docker's option string for the mount
            if svc.ports:
                container.with_exposed_ports(*svc.ports)
            if svc.command is not None:
                container.with_command(list(svc.command))
            kwargs: dict[str, Any] = {"labels": self._labels(**{SERVICE_LABEL: svc.name}), "read_only": svc.read_only}
            if svc.memory:
                kwargs["mem_limit"] = svc.memory
            if svc.cpus:
                kwargs["nano_cpus"] = int(svc.cpus * 1e9)
            if svc.cap_drop:
                kwargs["cap_drop"] = list(svc.cap_drop)
            if svc.cap_add:
                kwargs["cap_add"] = list(svc.cap_add)
            if svc.user:
                kwargs["user"] = svc.user
            if svc.privileged:
                kwargs["privileged"] = True
            if svc.sysctls:
                kwargs["sysctls"] = dict(svc.sysctls)
            device = self.devices.get(svc.name)
            if device is not None and device.requests:
                kwargs["device_requests"] = list(device.requests)
            for mount in svc.mounts:
                host_path, target, *mode = mount.split(":")
                container.with_volume_mapping(host_path, target, mode[0] if mode else "rw")
            for vol in svc.volumes:
                container.with_volume_mapping(self.volume(vol.volume), vol.path, "ro" if vol.read_only else "rw")
            container.with_kwargs(**kwargs)
            self._handles[instance] = ServiceHandle(instance, svc, container)
            handles.append(self._handles[instance])
        return handles

    def _image_user(self, tag: str) -> str | None:
        assert self._client is not None
        return self._client.images.get(tag).attrs["Config"].get("User") or None

    def _create_links(self) -> None:
        assert self.spec.proxy is not None
        proxy = self.service(self.spec.proxy)
        self._toxiproxy = ToxiproxyClient(f"http://127.0.0.1:{proxy.port(TOXIPROXY_API_PORT)}")
        for link in self.spec.links.values():
            self._toxiproxy.create(link.name, f"0.0.0.0:{link.listen_port}", link.upstream)

    def _wait_for_entrypoint(self, timeout: float = 60.0) -> None:
        last = "no answer yet"
        with self.http(timeout=3) as client:

            def answers() -> bool | None:
                nonlocal last
                try:
                    response = client.get(self.spec.health_path)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    return None
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                return True if response.status_code == 200 else None

            if wait_until(answers, timeout):
                return
        raise StackError(
            f"{self.url()}{self.spec.health_path} did not answer 200 within {timeout:.0f}s ({last})",
            "read the service logs",
        )

    def _diagnostics(self) -> str:
        parts = []
        for handle in self._handles.values():
            with contextlib.suppress(Exception):
                handle.docker.reload()
                state = handle.docker.attrs["State"]
                health = state.get("Health", {}).get("Status", "-")
                if state["Status"] != "running" or health not in ("healthy", "-"):
                    parts.append(
                        f"\n--- {handle.name}: {state['Status']}, health {health}; last log lines:\n{handle.logs(15)}"
                    )
        return "".join(parts)

    # -- handles ----------------------------------------------------------------------------------
    def service(self, name: str) -> ServiceHandle:
        """A running instance by name: ``postgres-primary``, or ``backend-1`` for a replica."""
        if name in self._handles:
            return self._handles[name]
        if name in self.spec.services and self.spec.services[name].replicas > 1:
            return self._handles[self.spec.services[name].instances()[0]]
        known = ", ".join(self._handles) or "(the stack is not running)"
        raise StackError(f"stack {self.spec.name} has no service {name!r}", f"use one of: {known}")

    def handles(self) -> list[ServiceHandle]:
        """Every running container of the stack, in start order."""
        return list(self._handles.values())

    def instances(self, service: str) -> list[ServiceHandle]:
        if service not in self.spec.services:
            raise StackError(
                f"stack {self.spec.name} has no service {service!r}", f"use one of: {', '.join(self.spec.services)}"
            )
        return [self._handles[i] for i in self.spec.services[service].instances()]

    def link(self, name: str) -> LinkHandle:
        if name not in self.spec.links or self._toxiproxy is None:
            raise StackError(
                f"stack {self.spec.name} has no link {name!r}", f"use one of: {', '.join(self.spec.links) or '(none)'}"
            )
        return LinkHandle(self.spec.links[name], self._toxiproxy)

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        if self._toxiproxy is None:
            raise StackError(f"stack {self.spec.name} has no Toxiproxy", "set [stack] proxy and define [links]")
        return self._toxiproxy

    def url(self, service: str | None = None, port: int | None = None, scheme: str | None = None) -> str:
        """``stack.url()`` is the entrypoint (e.g. https://localhost:PORT); else SERVICE:PORT on 127.0.0.1."""
        entry = urlsplit(self.spec.entrypoint_url or "")
        if service is None and not entry.hostname:
            raise StackError(f"stack {self.spec.name} has no entrypoint", "name a service: stack.url('SERVICE', PORT)")
        service = service or str(entry.hostname)
        port = port or (entry.port if service == entry.hostname else None) or self.spec.services[service].ports[0]
        scheme = scheme or (entry.scheme if service == entry.hostname else "http")
        host = "localhost" if scheme == "https" else "127.0.0.1"  # the certificate names localhost
        return f"{scheme}://{host}:{self.service(service).port(port)}"

    def target(self) -> HttpTarget:
        """The entrypoint as an HTTP target whose TLS is verified against this run's CA."""
        if self.ca is None:
            raise StackError(f"stack {self.spec.name} is not running", "start it first (`with Stack(...) as stack:`)")
        if self.spec.entrypoint_url is None:
            raise StackError(
                f"stack {self.spec.name} declares no HTTP entrypoint", 'add [stack] entrypoint = "https://SERVICE:PORT"'
            )
        return HttpTarget(self.url(), self.ca.client_context(), booted=True, ca_file=self.tls_files["ca"])

    def synthetic_headers(self) -> dict[str, str]:
        """Headers that mark stackcheck's own traffic, when the stack defines a load token."""
        token = self.secrets.get(SYNTHETIC_SECRET)
        return {SYNTHETIC_HEADER: token} if token else {}

    def http(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the entrypoint that verifies TLS against this run's CA."""
        return self.target().http(timeout=timeout, **kwargs)

    def postgres(
        self, service: str = "postgres-primary", superuser: bool = False, **kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A connection to a postgres service built from stackcheck's image (its env names the credentials)."""
        env = self._rendered_env(service)
        user = "postgres" if superuser else env.get("POSTGRES_APP_USER", "postgres")
        password = env["POSTGRES_PASSWORD"] if superuser else env.get("POSTGRES_APP_PASSWORD", env["POSTGRES_PASSWORD"])
        dbname = env.get("POSTGRES_DB", "postgres")
        port = self.service(service).port(5432)
        return psycopg.connect(
            host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, connect_timeout=5, **kwargs
        )

    def redis(self, service: str = "redis", admin: bool = False, **kwargs: Any) -> redis.Redis:
        env = self._rendered_env(service)
        user, password = ("admin", env["REDIS_ADMIN_PASSWORD"]) if admin else (None, env.get("REDIS_PASSWORD"))
        port = self.service(service).port(6379)
        return redis.Redis(host="127.0.0.1", port=port, username=user, password=password, socket_timeout=5, **kwargs)

    def _rendered_env(self, service: str) -> dict[str, str]:
        svc = self.service(service).service
        return {key: self.render(value) for key, value in svc.env.items()}

    def describe(self) -> str:
        lines = [f"stack {self.spec.name} (run {self.run_id}) from {self.spec.path}"]
        if self._handles and self.spec.entrypoint_url:
            lines.append(f"  entrypoint: {self.url()}  (CA: {self.tls_files['ca']})")
            for handle in self._handles.values():
                ports = ", ".join(f"{p}->127.0.0.1:{handle.port(p)}" for p in handle.service.ports)
                lines.append(f"  {handle.name:<18} {handle.container.image:<40} {ports}")
            lines.extend(f"  device: {choice.reason}" for choice in self.devices.values())
            if self._toxiproxy is not None:
                lines.append(f"  links via {self._toxiproxy.base_url}: {', '.join(self.spec.links)}")
            lines.append(f"  credentials: {self.run_dir / 'credentials.json'}")
        return "\n".join(lines)


def tmpfs_options(user: str | None) -> str:
    """A tmpfs owned by the service's non-root user (``uid=,gid=``). Docker (runc) mounts a tmpfs
    on a path the image lacks with mode 1777 at the first start; at a restart the mountpoint it
    made then (root's, 0755) exists, and runc gives the new tmpfs that mode: a non-root service
    could no longer write there. Owned by it, it can. A user by name cannot be resolved here
    (uid= takes a number): Docker's default then; root needs nothing."""
    uid, _, gid = (user or "").partition(":")
    if not uid.isdigit() or int(uid) == 0:
        return ""
    return f"uid={uid}" + (f",gid={gid}" if gid.isdigit() else "")


@dataclass(frozen=True)
class Removed:
    """What ``remove_runs`` removed: containers, networks and the run's named volumes."""

    containers: int
    networks: int = 0
    volumes: int = 0


def remove_runs(
    client: docker.DockerClient, run_id: str | None = None, networks: bool = True, keep_volumes: Collection[str] = ()
) -> Removed:
    """Remove containers, networks and volumes of one run (or every stackcheck run): returns the counts."""
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    # sparse: no inspect per container, which fails (NotFound) when a concurrent teardown (an
    # interrupted boot's threads, the reaper) removed one between the list and the inspect.
    containers = client.containers.list(all=True, filters={"label": label}, sparse=True)
    # In parallel: a stopping stack must be gone within seconds, and each removal waits for a kill.
    with ThreadPoolExecutor(max_workers=max(1, len(containers))) as pool:
        list(pool.map(_remove_container, containers))
    if not networks:
        return Removed(len(containers))
    found = client.networks.list(filters={"label": label})
    for network in found:
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    # Volumes a drill created for the run (e.g. a backup repository that outlives its containers).
    volumes = 0
    for volume in client.volumes.list(filters={"label": label}):
        if volume.name in keep_volumes:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
            volumes += 1
    if run_id:
        shutil.rmtree(RUNS_DIR / run_id, ignore_errors=True)
    else:
        shutil.rmtree(RUNS_DIR, ignore_errors=True)
    return Removed(len(containers), len(found), volumes)


def _remove_container(container: docker.models.containers.Container) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: another teardown is already removing it
            raise
