"""Stack files: a stack's topology and objectives as data (TOML), parsed into typed objects.

Every mistake (unknown key, wrong type, reference to an unknown service/network/secret/link,
a dependency cycle) is one StackFileError naming the file, the key and the fix.

A profile extends a base file instead of copying it (``read``): ``[stack] extends = "stack.toml"``
(relative to the extending file). The base is read first (its own ``extends`` too: a chain works,
a cycle or a missing base is an error), its keys named in ``[stack] drop`` are removed (TOML dotted
keys: ``drop = ["volumes.chat-data", "services.api.env.DATABASE_PATH"]``; a key the base does not
have is an error), then the extending file is deep-merged over it: tables merge key by key, any
other value (arrays included) replaces the base's. Drop is how a profile removes what merging
cannot (a volume, an env variable, a ``[disabled]`` line), or replaces a table wholesale (drop it,
then write it). Relative paths (policy, image contexts, template files, hooks, the locustfile)
resolve against the file that wrote them. Errors in the merged data name the extending file.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stackcheck import loadmix, tomldata
from stackcheck.chaos import spec as chaos_spec
from stackcheck.errors import StackFileError
from stackcheck.gpu import GpuMode
from stackcheck.tomldata import Reader

LINK_NAME = re.compile(r"^([a-z][a-z0-9-]*)->([a-z][a-z0-9-]*)$")
PLACEHOLDER = re.compile(r"\$\{([a-z]+)\.([^}]+)\}")
SIZE = re.compile(r"^\d+[kmg]$")


class Readiness(Enum):
    HEALTHCHECK = "healthcheck"  # the image's HEALTHCHECK reports healthy
    RUNNING = "running"  # the container is running (no health signal)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    internal: bool = False


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume of the stack (``[volumes.NAME]``): created for each run and labelled with
    its run id, mounted by the services that list it, removed with the stack (or kept on purpose
    for the next stack: ``Stack.stop(keep_volumes=...)``, ``Stack(volumes=...)``)."""

    name: str


@dataclass(frozen=True)
class VolumeMount:
    """``volumes = ["NAME:/path[:ro|rw]"]`` of a service."""

    volume: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class FileSpec:
    """A file mounted read-only into a service: inline template text, a template file, or TLS material."""

    path: str
    template: str | None = None
    source: Path | None = None
    tls: str | None = None  # "cert" | "key" | "ca"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    networks: Mapping[str, tuple[str, ...]]  # network -> extra aliases
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[FileSpec, ...] = ()
    ports: tuple[int, ...] = ()
    command: tuple[str, ...] | None = None
    depends_on: tuple[str, ...] = ()
    replicas: int = 1
    ready: Readiness = Readiness.HEALTHCHECK
    ready_timeout_s: float = 60.0
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    memory: str | None = None
    cpus: float | None = None
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    user: str | None = None
    privileged: bool = False
    mounts: tuple[str, ...] = ()  # host bind mounts "HOST:CONTAINER[:ro|rw]"
    volumes: tuple[VolumeMount, ...] = ()  # the stack's named volumes this service mounts
    sysctls: Mapping[str, str] = field(default_factory=dict)  # the container's own network namespace only
    gpu: GpuMode = GpuMode.OFF  # optional: the engine's NVIDIA GPU where it has one, else CPU

    def instances(self) -> list[str]:
        return [self.name] if self.replicas == 1 else [f"{self.name}-{i}" for i in range(1, self.replicas + 1)]


@dataclass(frozen=True)
class ImageSource:
    """An image this stack builds itself from its own Dockerfile (no registry needed), or uses as-is.

    ``context`` (with ``dockerfile``, ``args`` and optionally ``parent``, a catalog image such as
    "python" that the Dockerfile starts FROM via ``ARG BASE_IMAGE``) is built like the catalog's
    images, tagged by content hash. ``ref`` is an existing image, used as-is (pinned by the user).
    """

    name: str
    context: Path | None = None
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    parent: str | None = None
    ref: str | None = None


@dataclass(frozen=True)
class LinkSpec:
    """A dependency link routed through Toxiproxy: clients use ``${link.NAME}`` instead of the upstream."""

    name: str
    client: str
    upstream_service: str
    upstream_port: int
    listen_port: int

    @property
    def upstream(self) -> str:
        return f"{self.upstream_service}:{self.upstream_port}"


@dataclass(frozen=True)
class LoadObjective:
    p95_ms: float | None = None
    p99_ms: float | None = None
    ttft_p95_ms: float | None = None  # streamed answers ([load.requests.NAME] stream): time to first token
    max_error_rate: float | None = None
    min_rps: float | None = None


@dataclass(frozen=True)
class RecoveryObjective:
    rto_s: float | None = None
    rpo_s: float | None = None


@dataclass(frozen=True)
class Objectives:
    load: Mapping[str, LoadObjective] = field(default_factory=dict)
    chaos: Mapping[str, RecoveryObjective] = field(default_factory=dict)


@dataclass(frozen=True)
class StackSpec:
    path: Path
    name: str
    entrypoint_url: str | None  # scheme://SERVICE:CONTAINER_PORT, e.g. https://nginx:8443; None: no HTTP edge
    health_path: str
    tls_hostnames: tuple[str, ...]
    secrets: tuple[str, ...]
    networks: Mapping[str, NetworkSpec]
    services: Mapping[str, ServiceSpec]
    links: Mapping[str, LinkSpec]
    proxy: str | None
    objectives: Objectives
    images: Mapping[str, ImageSource] = field(default_factory=dict)  # the stack's own; else catalog names
    policy: Path | None = None  # the stack's policy, merged over the default policy
    # Checks (rule ids, chaos scenarios, load checks) switched off by name, each with the written
    # reason the report shows; a check that is not evaluated and not named here fails the gate.
    disabled: Mapping[str, str] = field(default_factory=dict)
    chaos: chaos_spec.ChaosSpec = field(default_factory=chaos_spec.ChaosSpec)  # [workloads] [ledgers] [scenarios]
    load_mix: loadmix.LoadMix | None = None  # [load]: what a load run sends (None: the stack declares no mix)
    volumes: Mapping[str, VolumeSpec] = field(default_factory=dict)  # [volumes]: named volumes, one set per run

    @property
    def entry_service(self) -> str | None:
        return urlsplit(self.entrypoint_url).hostname if self.entrypoint_url else None

    def start_order(self) -> list[list[str]]:
        """Services in waves: each wave depends only on earlier ones."""
        done: set[str] = set()
        waves: list[list[str]] = []
        while len(done) < len(self.services):
            wave = sorted(n for n, s in self.services.items() if n not in done and set(s.depends_on) <= done)
            waves.append(wave)
            done.update(wave)
        return waves


# -- parsing ------------------------------------------------------------------------------------


def load(path: str | Path) -> StackSpec:
    path = Path(path)
    return parse(read(path), path)


# Values that are paths relative to the file that wrote them ("*": any name; hooks end in
# ":FUNCTION"): made absolute when the file is a base, so they resolve as its author meant.
RELATIVE_PATHS = (
    "stack.policy", "images.*.context", "services.*.files.*.template_file", "scenarios.*.hook", "load.locustfile",
)  # fmt: skip
_EXTENDS_FIX = 'write extends = "stack.toml" (a path relative to this file)'


def read(path: str | Path) -> dict[str, Any]:
    """The stack file's data with its ``[stack] extends`` resolved (see the module docstring)."""
    return _read(Path(path), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = tomldata.read(path, StackFileError, "stack file", "pass an existing file with --stack")
    stack = Reader(path, data, "", StackFileError).table("stack")
    extends, drop = stack.get("extends", str), stack.str_list("drop")
    if extends is None:
        if drop:
            raise stack.fail("drop", "removes keys of a base file, but this file extends none", _EXTENDS_FIX)
        return data
    here, base_path = path.resolve(), (path.parent / extends).resolve()
    if base_path == here or base_path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, here, base_path))
        raise stack.fail("extends", f"forms a cycle: {cycle}", "extend a file that does not extend this one back")
    if not base_path.is_file():
        raise stack.fail("extends", f"{base_path} does not exist", _EXTENDS_FIX)
    base = _read(base_path, (*chain, here))
    for pattern in RELATIVE_PATHS:
        _rebase(base, pattern.split("."), base_path.parent, hook=pattern.endswith(".hook"))
    for key in drop:
        _drop(base, stack, key, base_path)
    own = copy.deepcopy(data)
    own["stack"] = {k: v for k, v in own["stack"].items() if k not in ("extends", "drop")}
    return _merge(base, own)


def _rebase(node: Any, keys: list[str], folder: Path, hook: bool) -> None:
    if not isinstance(node, dict):
        return
    head, rest = keys[0], keys[1:]
    for name in list(node) if head == "*" else [head] if head in node else []:
        value = node[name]
        if rest:
            _rebase(value, rest, folder, hook)
        elif isinstance(value, str):
            file, sep, function = value.rpartition(":") if hook else (value, "", "")
            if file:  # a malformed value stays as written, for parse to report
                node[name] = f"{folder / file}{sep}{function}"


def _drop(base: dict[str, Any], stack: Reader, key: str, base_path: Path) -> None:
    fix = 'write drop = ["volumes.chat-data", "services.api.env.DATABASE_PATH"] (TOML dotted keys of the base)'
    try:
        parsed = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise stack.fail("drop", f"{key!r} is not a TOML dotted key", fix) from None
    parts = []
    while isinstance(parsed, dict):
        (name, parsed), *_ = parsed.items()
        parts.append(name)
    node: Any = base
    for depth, name in enumerate(parts):
        if not isinstance(node, dict) or name not in node:
            where = ".".join(parts[: depth + 1])
            raise stack.fail("drop", f"{key!r}: the base {base_path} has no key {where}", "fix the key or remove it")
        if depth == len(parts) - 1:
            del node[name]
        node = node[name] if depth < len(parts) - 1 else None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base`` (modified): tables key by key, anything else replaced."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def parse(data: Mapping[str, Any], path: Path) -> StackSpec:
    top = Reader(path, data, "", StackFileError)
    top.only({
        "stack", "tls", "secrets", "networks", "images", "services", "links", "objectives", "disabled",
        "workloads", "ledgers", "scenarios", "load", "volumes",
    })  # fmt: skip
    stack = top.table("stack")
    if "extends" in stack.data or "drop" in stack.data:
        raise stack.fail(
            "extends" if "extends" in stack.data else "drop",
            "is resolved when the file is read, not by parse",
            "load the file with stackfile.load(path), or pass stackfile.read(path) to parse",
        )
    stack.only({"name", "entrypoint", "health_path", "proxy", "policy"})
    tls = top.table("tls")
    tls.only({"hostnames"})
    secrets = top.table("secrets")
    secrets.only({"generate"})
    secret_names = tuple(secrets.name(s, "secret") for s in secrets.str_list("generate"))

    networks: dict[str, NetworkSpec] = {}
    nets = top.table("networks")
    for name in nets.data:
        net = nets.table(nets.name(name, "network"))
        net.only({"internal"})
        networks[name] = NetworkSpec(name, net.get("internal", bool, False))

    svcs = top.table("services")
    if not svcs.data:
        raise top.fail("services", "defines no service", "add at least one [services.NAME] table")
    volumes = _volumes(top.table("volumes"))
    services = {name: _service(svcs, svcs.name(name, "service"), networks, path, volumes) for name in svcs.data}
    _check_volumes_used(top.table("volumes"), volumes, services)

    links: dict[str, LinkSpec] = {}
    lnk = top.table("links")
    for name in lnk.data:
        links[name] = _link(lnk, name, services)
    listen_ports = [link.listen_port for link in links.values()]
    if len(set(listen_ports)) != len(listen_ports):
        raise top.fail("links", "two links share a listen port", "give every link its own `listen` port")

    proxy = stack.get("proxy", str)
    if links and proxy is None:
        raise stack.fail(
            "proxy", "is missing but [links] are defined", 'name the Toxiproxy service, e.g. proxy = "toxiproxy"'
        )
    if proxy is not None and proxy not in services:
        raise stack.fail("proxy", f"names unknown service {proxy!r}", f"use one of: {', '.join(services)}")

    objectives = _objectives(top.table("objectives"))
    spec = StackSpec(
        path=path,
        name=stack.name(stack.get("name", str, required=True), "stack"),
        entrypoint_url=stack.get("entrypoint", str),
        health_path=stack.get("health_path", str, "/"),
        tls_hostnames=tls.str_list("hostnames") or ("localhost", "127.0.0.1"),
        secrets=secret_names,
        networks=networks,
        services=services,
        links=links,
        proxy=proxy,
        objectives=objectives,
        disabled=disabled_checks(top.table("disabled")),
        images=_images(top.table("images"), path),
        policy=_policy_path(stack, path),
        load_mix=loadmix.parse(top.table("load"), objectives.load, path),
        volumes=volumes,
    )
    entry = urlsplit(spec.entrypoint_url or "")
    try:
        entry_port = entry.port
    except ValueError:
        entry_port = None
    bad_entry = entry.scheme not in ("http", "https") or entry.hostname not in services
    if spec.entrypoint_url is not None and (bad_entry or entry_port not in services[str(entry.hostname)].ports):
        raise stack.fail(
            "entrypoint",
            f"{spec.entrypoint_url!r} is not http(s)://SERVICE:PORT with a published port of a service",
            'write entrypoint = "https://nginx:8443" and list 8443 in that service\'s ports',
        )
    _check_dependencies(svcs, services)
    _check_placeholders(svcs, spec)
    return replace(spec, chaos=chaos_spec.parse(top, spec))


def _policy_path(stack: Reader, path: Path) -> Path | None:
    rel: str | None = stack.get("policy", str)
    if rel is None:
        return None
    policy = (path.parent / rel).resolve()
    if not policy.is_file():
        raise stack.fail("policy", f"{policy} does not exist", "fix the path (relative to the stack file)")
    return policy


def _images(table: Reader, path: Path) -> dict[str, ImageSource]:
    out: dict[str, ImageSource] = {}
    for name in table.data:
        entry = table.table(table.name(name, "image"))
        entry.only({"context", "dockerfile", "args", "parent", "ref"})
        ref, context = entry.get("ref", str), entry.get("context", str)
        if (ref is None) == (context is None):
            raise entry.fail(
                "", "needs exactly one of context (a folder with a Dockerfile) or ref (an existing image)",
                'write context = "app" (relative to the stack file) or ref = "registry.example/app:1.4.2"',
            )  # fmt: skip
        if ref is not None:
            if set(entry.data) != {"ref"}:
                raise entry.fail("ref", "an image used as-is takes no build keys", "remove dockerfile/args/parent")
            out[name] = ImageSource(name, ref=ref)
            continue
        folder = (path.parent / str(context)).resolve()
        dockerfile = entry.get("dockerfile", str, "Dockerfile")
        if not (folder / dockerfile).is_file():
            raise entry.fail(
                "context",
                f"{folder / dockerfile} does not exist",
                "point context at the folder that holds the Dockerfile",
            )
        out[name] = ImageSource(name, folder, dockerfile, entry.str_map("args"), entry.get("parent", str))
    return out


def _service(
    svcs: Reader, name: str, networks: Mapping[str, NetworkSpec], path: Path, volumes: Mapping[str, VolumeSpec]
) -> ServiceSpec:
    svc = svcs.table(name)
    svc.only({
        "image", "networks", "env", "files", "ports", "command", "depends_on", "replicas", "ready",
        "ready_timeout_s", "read_only", "tmpfs", "memory", "cpus", "cap_drop", "cap_add", "user",
        "privileged", "mounts", "sysctls", "gpu", "volumes",
    })  # fmt: skip
    nets = svc.table("networks")
    if not nets.data:
        raise svc.fail(
            "networks", "is missing or empty", f'attach the service, e.g. networks = {{ internal = ["{name}"] }}'
        )
    attached: dict[str, tuple[str, ...]] = {}
    for net in nets.data:
        if net not in networks:
            raise nets.fail(
                net, "is not a network of this stack", f"define [networks.{net}] or use one of: {', '.join(networks)}"
            )
        attached[net] = nets.str_list(net)
    env = svc.table("env")
    for key in env.data:
        env.get(key, str)
    files = []
    ftable = svc.table("files")
    for target in ftable.data:
        raw = ftable.data[target]
        if isinstance(raw, str):
            files.append(FileSpec(target, template=raw))
            continue
        entry = ftable.table(target)
        entry.only({"template_file", "tls"})
        if "tls" in entry.data:
            kind = entry.get("tls", str)
            if kind not in ("cert", "key", "ca"):
                raise entry.fail("tls", f"must be cert, key or ca, not {kind!r}", 'write tls = "cert"')
            files.append(FileSpec(target, tls=kind))
        else:
            source = (path.parent / entry.get("template_file", str, required=True)).resolve()
            if not source.is_file():
                raise entry.fail(
                    "template_file", f"{source} does not exist", "fix the path (relative to the stack file)"
                )
            files.append(FileSpec(target, source=source))
    ports = svc.get("ports", list, [])
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise svc.fail("ports", f"must be a list of port numbers, found {port!r}", "write ports = [8080]")
    replicas = svc.get("replicas", int, 1)
    if not 1 <= replicas <= 20:
        raise svc.fail("replicas", f"must be between 1 and 20, not {replicas}", "write replicas = 2")
    ready = svc.get("ready", str, "healthcheck")
    try:
        readiness = Readiness(ready)
    except ValueError:
        raise svc.fail(
            "ready", f"must be one of {[r.value for r in Readiness]}, not {ready!r}", 'write ready = "healthcheck"'
        ) from None
    memory = svc.get("memory", str)
    if memory is not None and not SIZE.match(memory):
        raise svc.fail("memory", f"must look like 256m or 1g, not {memory!r}", 'write memory = "256m"')
    cpus = svc.get("cpus", (int, float))
    command = svc.str_list("command") if "command" in svc.data else None
    return ServiceSpec(
        name=name,
        image=svc.get("image", str, required=True),
        networks=attached,
        env=dict(env.data),
        files=tuple(files),
        ports=tuple(ports),
        command=command,
        depends_on=svc.str_list("depends_on"),
        replicas=replicas,
        ready=readiness,
        ready_timeout_s=float(svc.get("ready_timeout_s", (int, float), 60.0)),
        read_only=svc.get("read_only", bool, False),
        tmpfs=svc.str_list("tmpfs"),
        memory=memory,
        cpus=float(cpus) if cpus is not None else None,
        cap_drop=svc.str_list("cap_drop"),
        cap_add=svc.str_list("cap_add"),
        user=svc.get("user", str),
        privileged=svc.get("privileged", bool, False),
        mounts=_mounts(svc),
        volumes=_volume_mounts(svc, volumes),
        sysctls=_sysctls(svc),
        gpu=_gpu(svc),
    )


def _gpu(svc: Reader) -> GpuMode:
    value = svc.get("gpu", str, GpuMode.OFF.value)
    try:
        return GpuMode(value)
    except ValueError:
        choices = " | ".join(f'"{m.value}"' for m in GpuMode)
        raise svc.fail("gpu", f"must be one of {choices}, not {value!r}", 'write gpu = "optional"') from None


def _sysctls(svc: Reader) -> dict[str, str]:
    table = svc.table("sysctls")
    for key in table.data:
        # net.* is per network namespace: any other key would change the host or fail at create.
        if not key.startswith("net."):
            raise table.fail(
                key,
                "is not a net.* sysctl of the container's own namespace",
                'use e.g. "net.ipv4.tcp_syn_retries" = "2"',
            )
        table.get(key, str, required=True)
    return dict(table.data)


def _mounts(svc: Reader) -> tuple[str, ...]:
    mounts = svc.str_list("mounts")
    for mount in mounts:
        parts = mount.split(":")
        if (
            len(parts) not in (2, 3)
            or not parts[0].startswith("/")
            or not parts[1].startswith("/")
            or parts[2:] not in ([], ["ro"], ["rw"])
        ):
            raise svc.fail(
                "mounts",
                f"{mount!r} is not HOST:CONTAINER[:ro|rw] with absolute paths",
                'write mounts = ["/srv/data:/data:ro"]',
            )
    return mounts


def _volumes(table: Reader) -> dict[str, VolumeSpec]:
    out: dict[str, VolumeSpec] = {}
    for name in table.data:
        table.table(table.name(name, "volume")).only(set())
        out[name] = VolumeSpec(name)
    return out


_VOLUME_FIX = 'write volumes = ["chat-data:/data"] (NAME:/path[:ro|rw], NAME a [volumes.NAME] of the stack file)'


def _volume_mounts(svc: Reader, volumes: Mapping[str, VolumeSpec]) -> tuple[VolumeMount, ...]:
    found: list[VolumeMount] = []
    for entry in svc.str_list("volumes"):
        name, _, rest = entry.partition(":")
        path, _, mode = rest.partition(":")
        if not name or not path.startswith("/") or mode not in ("", "ro", "rw") or ":" in mode:
            raise svc.fail("volumes", f"{entry!r} is not NAME:/path[:ro|rw]", _VOLUME_FIX)
        if name not in volumes:
            declared = ", ".join(volumes) or "none declared"
            raise svc.fail(
                "volumes",
                f"{entry!r} names {name!r}, which is not a volume of this stack ({declared})",
                f"declare it: add a table [volumes.{name}] to the stack file, or fix the name",
            )
        taken = {m.path for m in found} | {m.split(":")[1] for m in svc.str_list("mounts")} | set(svc.str_list("tmpfs"))
        if path.rstrip("/") in {p.rstrip("/") for p in taken}:
            raise svc.fail("volumes", f"{entry!r}: {path} is mounted twice", "give each mount its own path")
        found.append(VolumeMount(name, path, mode == "ro"))
    return tuple(found)


def _check_volumes_used(table: Reader, volumes: Mapping[str, VolumeSpec], services: Mapping[str, ServiceSpec]) -> None:
    used = {m.volume for svc in services.values() for m in svc.volumes}
    for name in volumes:
        if name not in used:
            raise table.fail(
                name,
                "is declared but no service mounts it",
                f'add "{name}:/path" to a service\'s volumes, or remove it',
            )


def _link(lnk: Reader, name: str, services: Mapping[str, ServiceSpec]) -> LinkSpec:
    match = LINK_NAME.match(name)
    if not match:
        raise lnk.fail(name, "is not a link name", 'name links "client->upstream", e.g. "backend->postgres-primary"')
    entry = lnk.table(name)
    entry.only({"upstream", "listen"})
    upstream = entry.get("upstream", str, required=True)
    host, _, port = upstream.rpartition(":")
    if host not in services or not port.isdigit():
        raise entry.fail(
            "upstream",
            f"{upstream!r} is not SERVICE:PORT of a service in this stack",
            f"use one of: {', '.join(services)}",
        )
    client = match.group(1)
    if client not in services:
        raise lnk.fail(name, f"client {client!r} is not a service of this stack", f"use one of: {', '.join(services)}")
    listen = entry.get("listen", int, required=True)
    if not 1024 <= listen < 65536:
        raise entry.fail("listen", f"must be an unprivileged port (1024-65535), not {listen}", "write listen = 15432")
    return LinkSpec(name, client, host, int(port), listen)


def _objectives(obj: Reader) -> Objectives:
    obj.only({"load", "chaos"})
    load_objs: dict[str, LoadObjective] = {}
    lt = obj.table("load")
    for group in lt.data:
        entry = lt.table(group)
        entry.only({"p95_ms", "p99_ms", "ttft_p95_ms", "max_error_rate", "min_rps"})
        load_objs[group] = LoadObjective(**{k: float(entry.get(k, (int, float))) for k in entry.data})
    chaos_objs: dict[str, RecoveryObjective] = {}
    ct = obj.table("chaos")
    for scenario in ct.data:
        entry = ct.table(scenario)
        entry.only({"rto_s", "rpo_s"})
        chaos_objs[scenario] = RecoveryObjective(**{k: float(entry.get(k, (int, float))) for k in entry.data})
    return Objectives(load_objs, chaos_objs)


def disabled_checks(table: Reader) -> dict[str, str]:
    """``[disabled]`` lines ``CHECK = "reason"``: a check is switched off only with a written reason."""
    out: dict[str, str] = {}
    for check_id, reason in table.data.items():
        if not isinstance(reason, str) or not reason.strip():
            raise table.fail(
                check_id, "must give the reason the check is disabled", f'write "{check_id}" = "why it does not apply"'
            )
        out[check_id] = reason.strip()
    return out


def _check_dependencies(svcs: Reader, services: Mapping[str, ServiceSpec]) -> None:
    for svc in services.values():
        for dep in svc.depends_on:
            if dep not in services:
                raise svcs.table(svc.name).fail(
                    "depends_on", f"names unknown service {dep!r}", f"use one of: {', '.join(services)}"
                )
    # Depth-first search for a cycle, reporting its path.
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in services[name].depends_on:
            if state.get(dep) == 1:
                cycle = " -> ".join([*trail[trail.index(dep) :], dep]) if dep in trail else f"{name} -> {dep}"
                raise svcs.table(name).fail(
                    "depends_on", f"forms a dependency cycle: {cycle}", "remove one depends_on edge of the cycle"
                )
            if dep not in state:
                visit(dep, [*trail, dep])
        state[name] = 2

    for name in services:
        if name not in state:
            visit(name, [name])


def _check_placeholders(svcs: Reader, spec: StackSpec) -> None:
    """Every ${kind.name} in env and inline files must resolve; template files are checked at boot."""
    for svc in spec.services.values():
        texts = [*svc.env.values(), *(f.template for f in svc.files if f.template is not None)]
        for text in texts:
            for kind, ref in PLACEHOLDER.findall(text):
                problem = placeholder_problem(spec, kind, ref)
                if problem:
                    raise svcs.table(svc.name).fail(
                        "env" if text in svc.env.values() else "files", problem, _PLACEHOLDER_FIX
                    )


_PLACEHOLDER_FIX = "use ${secret.NAME}, ${link.CLIENT->UPSTREAM} or ${upstream.SERVICE:PORT [server params]}"


def placeholder_problem(spec: StackSpec, kind: str, ref: str) -> str | None:
    if kind == "secret":
        return None if ref in spec.secrets else f"${{secret.{ref}}} is not in [secrets] generate"
    if kind == "link":
        return None if ref in spec.links else f"${{link.{ref}}} is not a link of this stack"
    if kind == "upstream":
        host = ref.split()[0].rpartition(":")[0] if ref.split() else ""
        return None if host in spec.services else f"${{upstream.{ref}}} does not name SERVICE:PORT of a service"
    return f"unknown placeholder kind ${{{kind}.…}}"
