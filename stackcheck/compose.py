"""`stackcheck init`: a starter stack file and policy, from a docker-compose file or from nothing.

The translation is literal on purpose: what a stack file can say is written, guesses are marked
``# check:``, and every compose key it cannot carry is listed with the reason (on stdout and at
the end of the stack file), so a team starts from its own stack and sees what is left to decide.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from stackcheck import images as catalog_images
from stackcheck.compliance.model import Area, Policy
from stackcheck.errors import StackcheckError
from stackcheck.tomldata import NAME

STACK_FILE = "stack.toml"
POLICY_FILE = "policy.toml"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
# A registry image is stood in for by the catalog image of its repository's last path segment
# (postgres:16 -> postgres, ollama/ollama -> ollama), under these other names too; never by the
# catalog's test infrastructure.
CATALOG_ALIASES = {"postgresql": "postgres", "nginx-unprivileged": "nginx"}
NOT_FOR_STACKS = frozenset({"ryuk"})
# The catalog images run unprivileged, so some listen elsewhere than the upstream images.
CATALOG_PORTS = {"nginx": {80: 8080, 443: 8443}}
HTTPS_PORTS = (443, 8443)
HTTP_PORTS = (80, 8080)
MAX_REPLICAS = 20  # stackfile's bound
# Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt}, $VAR.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
URL = re.compile(r"https?://[^\s\"']+")
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
GPU_REASON = (
    'the stack-file service key gpu = "optional" does not exist yet: the service boots without a GPU '
    "(stackcheck machines have none)"
)

SERVICE_KEY_REASONS = {
    "container_name": "stackcheck names every container per run (RUN-SERVICE), so runs never collide",
    "restart": "a stack file has no restart policy: a stopped container stays stopped, which chaos scenarios observe",
    "entrypoint": "a stack file has no entrypoint override: the image's ENTRYPOINT runs; build an image with it",
    "expose": "every container port is reachable on the stack's networks; only `ports` are published",
    "logging": "stackcheck reads container logs through the engine's default log driver",
    "labels": "stackcheck labels containers with its own run labels",
    "hostname": "containers are reached by service name and network aliases",
    "domainname": "containers are reached by service name and network aliases",
    "extra_hosts": "a stack file has no /etc/hosts entries: reach services by name",
    "dns": "a stack file has no DNS settings: the engine's embedded DNS resolves service names",
    "dns_search": "a stack file has no DNS settings: the engine's embedded DNS resolves service names",
    "working_dir": "set WORKDIR in the image",
    "stop_signal": "set STOPSIGNAL in the image",
    "stop_grace_period": "stackcheck stops containers with the engine's default grace period",
    "network_mode": "stackcheck attaches every service to the stack's own networks",
    "links": "legacy links: services reach each other by name on shared networks",
    "external_links": "a stack reaches nothing outside itself",
    "volumes_from": "a stack file has no shared volumes",
    "devices": "a stack file passes no host devices",
    "ulimits": "a stack file has no ulimits",
    "security_opt": "a stack file has no security options (seccomp/apparmor stay at the engine's defaults)",
    "pid": "a stack file shares no PID namespace",
    "ipc": "a stack file shares no IPC namespace",
    "init": "a stack file has no init process option: use an image whose entrypoint reaps children",
    "shm_size": "a stack file has no shm size",
    "platform": "images are built for the engine's own platform",
    "pull_policy": "stackcheck never pulls at run time",
    "profiles": "stackcheck boots every service; delete this one if the stack is tested without that profile",
    "runtime": GPU_REASON,
    "gpus": GPU_REASON,
    "memswap_limit": "a stack file sets memory (mem_limit) only",
    "mem_reservation": "a stack file sets limits, not reservations",
    "cpu_shares": "a stack file sets cpus only",
    "cpu_quota": "a stack file sets cpus only",
    "cpuset": "a stack file sets cpus only",
    "pids_limit": "a stack file has no pids limit",
    "oom_kill_disable": "a stack file has no OOM settings",
    "cgroup_parent": "a stack file has no cgroup settings",
    "group_add": "a stack file has no extra groups: set them in the image",
    "stdin_open": "stackcheck runs services detached, without a terminal",
    "tty": "stackcheck runs services detached, without a terminal",
    "userns_mode": "a stack file has no user namespace setting",
    "extends": "compose's extends is not resolved here: copy the extended service's keys in",
}
TOP_KEY_REASONS = {
    "version": "obsolete in compose itself; nothing to translate",
    "include": "included compose files are not translated: run `stackcheck init --from-compose` on each",
}
NETWORK_KEY_REASONS = {
    "external": "an existing network: stackcheck makes its own networks for every run",
    "ipam": "stackcheck lets the engine pick subnets (fixed subnets collide between runs)",
    "driver_opts": "driver options are not in a stack file (services on one network reach each other)",
    "driver": "stack networks are bridge networks",
    "name": "network names are made per run",
    "attachable": "stack networks are the stack's own",
    "enable_ipv6": "stack networks are IPv4",
    "labels": "stackcheck labels networks with its own run labels",
}
BUILD_KEY_REASONS = {
    "target": "a stack file builds the Dockerfile's last stage: move that stage last or give it a Dockerfile",
    "cache_from": "stackcheck caches builds by the content hash of the context",
    "cache_to": "stackcheck caches builds by the content hash of the context",
    "tags": "stackcheck tags builds by the content hash of the context",
    "labels": "stackcheck labels its own images",
    "network": "builds use the engine's default build network",
    "ssh": "a stack-file build has no SSH agent",
    "secrets": "a stack-file build has no build secrets",
    "dockerfile_inline": "write the Dockerfile into the context",
    "additional_contexts": "a stack-file build has one context",
    "platforms": "images are built for the engine's own platform",
    "shm_size": "a stack-file build has no shm size",
    "extra_hosts": "a stack-file build has no extra hosts",
    "no_cache": "stackcheck rebuilds when the context changes (or with `images build --force`)",
    "pull": "stackcheck never pulls at run time",
    "isolation": "a stack-file build has no isolation option",
    "privileged": "a stack-file build is never privileged",
    "ulimits": "a stack-file build has no ulimits",
}


class ComposeError(StackcheckError):
    """A compose file is unreadable or is not a compose file; or `init` would overwrite files."""


@dataclass(frozen=True)
class Untranslated:
    """A compose key (dotted path, as in the compose file) the stack file does not carry, and why."""

    key_path: str
    reason: str

    def line(self) -> str:
        return f"{self.key_path}: {self.reason}"


@dataclass(frozen=True)
class Translation:
    name: str
    stack_toml: str
    policy_toml: str
    untranslated: tuple[Untranslated, ...] = ()


def parse_image_map(items: Iterable[str]) -> dict[str, str]:
    """``--image-map COMPOSE_IMAGE=STACKCHECK_IMAGE`` pairs (a catalog name or an image reference)."""
    out: dict[str, str] = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ComposeError(
                f"--image-map {item!r} is not COMPOSE_IMAGE=STACKCHECK_IMAGE",
                "write e.g. --image-map postgres:16=postgres or --image-map ollama/ollama=registry.local/ollama:0.5",
            )
        out[source.strip()] = target.strip()
    return out


def translate(
    compose_path: str | Path, image_map: Mapping[str, str] | None = None, out_dir: str | Path | None = None
) -> Translation:
    """The stack file and policy for a compose file; paths in them are relative to ``out_dir``
    (the folder the stack file will be written to; default: the compose file's folder)."""
    path = Path(compose_path)
    data, notes = _load(path)
    translator = _Translator(path, Path(out_dir) if out_dir is not None else path.parent, image_map or {})
    for note in notes:
        translator.note(note.key_path, note.reason)
    return translator.run(data)


def starter(out_dir: str | Path = ".") -> Translation:
    """`stackcheck init` without a compose file: one nginx serving a page over TLS, commented."""
    name = _slug(Path(out_dir).resolve().name, "mystack")
    stack = STARTER_STACK.replace("@NAME@", name)
    facts = _Facts(name, frozenset({"nginx"}), ("nginx",), ("nginx",), "https://nginx:8443", "/healthz")
    policy = _policy(facts, active=True)
    return Translation(name, stack, policy)


def write(translation: Translation, out_dir: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write stack.toml and policy.toml into ``out_dir``; never over existing files unless ``force``."""
    out = Path(out_dir)
    stack, policy = out / STACK_FILE, out / POLICY_FILE
    existing = [p for p in (stack, policy) if p.exists()]
    if existing and not force:
        raise ComposeError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}",
            "pass --force to overwrite, or --out another folder",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        stack.write_text(translation.stack_toml)
        policy.write_text(translation.policy_toml)
    except OSError as exc:
        raise ComposeError(f"cannot write into {out}: {exc.strerror}", "pass --out a writable folder") from exc
    return stack, policy


# -- reading the compose file -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML with compose's merge keys (as PyYAML's safe loader), recording duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Untranslated] = []


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        if key_node.value in seen:
            loader.duplicates.append(
                Untranslated(
                    f"line {key_node.start_mark.line + 1}",
                    f"key {key_node.value!r} appears twice in one mapping (compose refuses that); the last one is used",
                )
            )
        seen.add(key_node.value)
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=True): loader.construct_object(v, deep=True) for k, v in node.value}


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def _load(path: Path) -> tuple[dict[str, Any], list[Untranslated]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ComposeError(
            f"cannot read compose file {path}: {exc.strerror}", "pass an existing file with --from-compose"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ComposeError(f"{path}: not UTF-8 text ({exc.reason})", "save the compose file as UTF-8") from exc
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComposeError(f"{path}: not valid YAML{where}: {problem}", "fix the YAML at the position named") from None
    finally:
        loader.dispose()
    documents = [d for d in documents if d is not None]
    if not documents:
        raise ComposeError(f"{path}: is empty", "pass a compose file with a top-level `services:` mapping")
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise ComposeError(
                f"{path}: document {index + 1} is a {type(doc).__name__}, not a mapping",
                "a compose file is a mapping with a top-level `services:` key",
            )
    with_services = [i for i, d in enumerate(documents) if isinstance(d.get("services"), dict) and d["services"]]
    if not with_services:
        first = documents[0]
        looks_like = [k for k, v in first.items() if isinstance(v, dict) and ({"image", "build"} & set(v))]
        fix = (
            f"nest the service definitions ({', '.join(looks_like)}) under a top-level `services:` key"
            if looks_like
            else "a compose file names its containers under a top-level `services:` mapping"
        )
        raise ComposeError(f"{path}: defines no services (no top-level `services:` mapping)", fix)
    chosen = with_services[0]
    notes = list(loader.duplicates)
    notes += [
        Untranslated(f"document {i + 1}", "a compose file holds one document: translate this one from its own file")
        for i in range(len(documents))
        if i != chosen
    ]
    return documents[chosen], notes


# -- the translation ----------------------------------------------------------------------------


@dataclass
class _Image:
    fields: dict[str, Any]
    comment: str = ""


@dataclass
class _Service:
    name: str
    compose_name: str
    keys: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)  # key -> trailing comment
    lead: list[str] = field(default_factory=list)  # comment lines at the top of the table
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)  # compose names
    health_urls: list[str] = field(default_factory=list)


class _Translator:
    def __init__(self, path: Path, out_dir: Path, image_map: Mapping[str, str]) -> None:
        self.path = path
        self.dir = path.resolve().parent
        self.out = out_dir.resolve()
        self.image_map = image_map
        self.notes: dict[tuple[str, str], Untranslated] = {}
        self.secrets: list[str] = []
        self.networks: dict[str, bool] = {}  # stack name -> internal
        self.network_names: dict[str, str] = {}  # compose name -> stack name
        self.images: dict[str, _Image] = {}
        self.services: dict[str, _Service] = {}
        self.service_names: dict[str, str] = {}  # compose name -> stack name
        self.top_secrets: dict[str, Any] = {}
        self.top_configs: dict[str, Any] = {}
        self.volume_names: dict[str, str] = {}  # compose name -> stack name ([volumes.NAME])
        self.volumes_used: set[str] = set()  # stack names some service mounts
        dotenv = self.dir / ".env"
        self.dotenv = _read_env_file(dotenv) if dotenv.is_file() else {}
        self.catalog = catalog_images.Catalog.load()

    def note(self, key_path: str, reason: str) -> None:
        self.notes.setdefault((key_path, reason), Untranslated(key_path, reason))

    # top level

    def run(self, data: Mapping[str, Any]) -> Translation:
        for key in data:
            if key in ("services", "networks", "volumes", "secrets", "configs", "name"):
                continue
            if str(key).startswith("x-"):
                self.note(str(key), "extension field: its values are translated where a YAML anchor merged them")
            else:
                self.note(str(key), TOP_KEY_REASONS.get(str(key), "not a compose key this translation knows"))
        self.top_secrets = _dict(data.get("secrets"))
        self.top_configs = _dict(data.get("configs"))
        self._networks(_dict(data.get("networks")))
        self._top_volumes(_dict(data.get("volumes")))
        services = data["services"]
        for cname in services:
            self.service_names[str(cname)] = self._unique(_slug(str(cname), "service"), self.service_names.values())
        for cname, raw in services.items():
            if not isinstance(raw, dict):
                raise ComposeError(
                    f"{self.path}: services.{cname} is not a mapping", "write its keys (image, ports, ...) under it"
                )
            self._service(str(cname), raw)
        self._top_level_secret_notes()
        for cname, volume in self.volume_names.items():
            if volume not in self.volumes_used:  # a stack file refuses a volume no service mounts
                self.note(f"volumes.{cname}", "declared but no service mounts it: left out")
        name = _slug(str(data.get("name") or self.dir.name), "stack")
        return Translation(name, self._render(name), self._policy_text(name), tuple(self.notes.values()))

    def _top_volumes(self, vols: Mapping[str, Any]) -> None:
        """Named volumes become [volumes.NAME]: created fresh for each run, removed with it."""
        for cname, raw in vols.items():
            name = self._unique(_slug(str(cname), "volume"), self.volume_names.values())
            self.volume_names[str(cname)] = name
            for key, value in _dict(raw).items():
                if key == "driver" and value == "local":
                    continue  # what a stack volume is
                reason = (
                    "an existing volume: a stack volume is created empty for each run (a drill hands one on)"
                    if key == "external"
                    else "a stack volume is a plain local volume made for each run"
                )
                self.note(f"volumes.{cname}.{key}", reason)

    def _networks(self, nets: Mapping[str, Any]) -> None:
        for cname, raw in nets.items():
            name = self._network(str(cname))
            for key, value in _dict(raw).items():
                if key == "internal":
                    self.networks[name] = bool(value)
                elif not (key == "driver" and value in (None, "bridge")):
                    self.note(
                        f"networks.{cname}.{key}", NETWORK_KEY_REASONS.get(key, "a stack network has no such key")
                    )

    def _network(self, cname: str) -> str:
        if cname not in self.network_names:
            self.network_names[cname] = self._unique(_slug(cname, "net"), self.network_names.values())
            self.networks[self.network_names[cname]] = False
        return self.network_names[cname]

    @staticmethod
    def _unique(name: str, taken: Iterable[str]) -> str:
        used, candidate, n = set(taken), name, 2
        while candidate in used:
            candidate = f"{name[:38]}-{n}"
            n += 1
        return candidate

    def _top_level_secret_notes(self) -> None:
        for cname, raw in self.top_secrets.items():
            spec = _dict(raw)
            source = (
                f"the file {spec['file']}" if "file" in spec
                else f"the variable {spec['environment']}" if "environment" in spec
                else "an external secret store" if spec.get("external") else "nowhere named"
            )  # fmt: skip
            self.note(
                f"secrets.{cname}",
                f"compose reads it from {source}; stackcheck generates a random value per run "
                f"(${{secret.{_slug(cname, 'secret')}}}) and mounts it where compose did",
            )

    # one service

    def _service(self, cname: str, raw: Mapping[str, Any]) -> None:
        where = f"services.{cname}"
        svc = _Service(self.service_names[cname], cname)
        self.services[svc.name] = svc
        image, health = self._image(svc, raw, where)
        svc.keys["image"] = image
        svc.keys["networks"] = self._service_networks(svc, raw, where)
        ports = self._ports(raw.get("ports"), where, image)
        if ports:
            svc.keys["ports"] = ports
        depends = raw.get("depends_on")
        if depends is not None:
            svc.depends = self._depends(depends, where)
        replicas = self._replicas(raw, where)
        if replicas != 1:
            svc.keys["replicas"] = replicas
        svc.keys["ready"] = self._readiness(svc, raw.get("healthcheck"), health, where)
        if raw.get("command") is not None:
            svc.keys["command"] = self._command(raw["command"], f"{where}.command")
        if raw.get("user") is not None:
            svc.keys["user"] = str(raw["user"])
        for key in ("read_only", "privileged"):
            if raw.get(key):
                svc.keys[key] = True
        tmpfs = self._tmpfs(raw.get("tmpfs"), where)
        named: list[str] = []
        mounts = self._volumes(svc, raw.get("volumes"), where, tmpfs, named)
        if tmpfs:
            svc.keys["tmpfs"] = tmpfs
        if named:
            svc.keys["volumes"] = named
        self._resources(svc, raw, where)
        for key in ("cap_drop", "cap_add"):
            if raw.get(key):
                svc.keys[key] = [str(c) for c in _list(raw[key])]
        sysctls = self._sysctls(raw.get("sysctls"), where)
        if sysctls:
            svc.keys["sysctls"] = sysctls
        if mounts:
            svc.keys["mounts"] = mounts
            svc.comments["mounts"] = "check: host paths made absolute, as stack files need them"
        self._environment(svc, raw, where)
        self._secret_files(svc, raw.get("secrets"), where)
        self._config_files(svc, raw.get("configs"), where)
        for key, value in raw.items():
            if key in HANDLED_SERVICE_KEYS:
                continue
            reason = SERVICE_KEY_REASONS.get(key, "a stack-file service has no such key")
            if key in ("runtime", "gpus") and not (key == "runtime" and value != "nvidia"):
                svc.lead.append(f"gpu: compose asks for a GPU ({key}: {value}); {GPU_REASON}")
            elif key == "runtime":
                reason = "a stack file runs the engine's default runtime"
            if key == "profiles":
                reason = f"profiles {_list(value)}: {reason}"
            self.note(f"{where}.{key}", reason)

    def _image(self, svc: _Service, raw: Mapping[str, Any], where: str) -> tuple[str, bool | None]:
        """The service's ``image`` and whether it has a HEALTHCHECK (None: not known here)."""
        ref = self._interpolate(str(raw["image"]), f"{where}.image", secrets_ok=False) if raw.get("image") else None
        mapped = None
        if ref is not None:
            mapped = self.image_map.get(ref) or self.image_map.get(_repository(ref) or "")
        if mapped is not None:
            if raw.get("build") is not None:
                self.note(f"{where}.build", f"replaced by --image-map {ref}={mapped}")
            return self._mapped_image(svc, mapped, ref or "", where)
        if raw.get("build") is not None:
            if ref:
                self.note(f"{where}.image", f"compose tags the build {ref}; stackcheck tags builds by content hash")
            return self._build(svc, raw["build"], f"{where}.build")
        if ref is None:
            self.note(f"{where}", "has neither image nor build (compose refuses that): name its image")
            return self._ref_image(svc, svc.name, where)
        catalog = self._catalog_name(ref)
        if catalog is not None:
            svc.comments["image"] = (
                f"check: compose {ref}; stackcheck's catalog image (built locally) stands in: its version "
                "and entrypoint may differ"
            )
            return catalog, self._catalog_health(catalog)
        return self._ref_image(svc, ref, where)

    def _catalog_name(self, ref: str) -> str | None:
        base = (_repository(ref) or "").rsplit("/", 1)[-1]
        name = CATALOG_ALIASES.get(base, base)
        return name if name in self.catalog.images and name not in NOT_FOR_STACKS else None

    def _mapped_image(self, svc: _Service, target: str, ref: str, where: str) -> tuple[str, bool | None]:
        if target in self.catalog.images and target not in NOT_FOR_STACKS:
            svc.comments["image"] = f"--image-map {ref}={target}"
            return target, self._catalog_health(target)
        if "/" not in target and ":" not in target:
            raise ComposeError(
                f"--image-map {ref}={target}: {target!r} is neither a catalog image nor an image reference",
                f"use one of: {', '.join(sorted(set(self.catalog.images) - NOT_FOR_STACKS))}, or a reference like "
                "registry.local/app:1.2",
            )
        return self._ref_image(svc, target, where, needs_registry=False)

    def _ref_image(self, svc: _Service, ref: str, where: str, needs_registry: bool = True) -> tuple[str, bool | None]:
        for name, image in self.images.items():
            if image.fields.get("ref") == ref:
                return name, None
        name = self._image_name(_slug((_repository(ref) or ref).rsplit("/", 1)[-1], svc.name))
        self.images[name] = _Image({"ref": ref}, "check: used as-is; it must be present in the engine")
        if needs_registry:
            tag = ref.rsplit("/", 1)[-1]
            unpinned = ":" not in tag or tag.endswith(":latest")
            self.note(
                f"{where}.image",
                f"{ref} is not a stackcheck catalog image and needs a registry, which may be unreachable "
                "(stackcheck never pulls): `docker pull` it where one answers, build it locally, or pass "
                f"--image-map {ref}=CATALOG_IMAGE" + ("; it is unpinned (latest)" if unpinned else ""),
            )
        return name, None

    def _image_name(self, name: str) -> str:
        # A stack's own image never shadows a catalog image of the same name.
        base = name if name not in self.catalog.images else f"{name}-app"
        return self._unique(base, self.images)

    def _build(self, svc: _Service, build: Any, where: str) -> tuple[str, bool | None]:
        spec = {"context": build} if isinstance(build, str) else _dict(build)
        context = str(spec.get("context", "."))
        name = self._image_name(svc.name)
        if "://" in context or context.startswith("git@"):
            self.note(f"{where}.context", f"{context} is a remote context: build it yourself and tag it {name}:local")
            self.images[name] = _Image({"ref": f"{name}:local"}, "check: build the remote context and tag it so")
            return name, None
        folder = (self.dir / os.path.expanduser(context)).resolve()
        dockerfile = str(spec.get("dockerfile", "Dockerfile"))
        fields: dict[str, Any] = {"context": _relpath(folder, self.out)}
        if dockerfile != "Dockerfile":
            fields["dockerfile"] = _relpath((folder / dockerfile).resolve(), folder)
        args = self._build_args(spec.get("args"), f"{where}.args")
        if args:
            fields["args"] = args
        self.images[name] = _Image(fields)
        for key in spec:
            if key not in ("context", "dockerfile", "args"):
                self.note(f"{where}.{key}", BUILD_KEY_REASONS.get(key, "a stack-file build has no such key"))
        path = folder / dockerfile
        if not path.is_file():
            self.note(f"{where}.context", f"{path} does not exist here: the stack file loads once it does")
            return name, None
        stages = _stages(path.read_text(errors="replace"))
        registry = [src for _, src, _ in stages if src not in {s for s, _, _ in stages} and "$" not in src]
        registry = [src for src in registry if src != "scratch"]
        if registry:
            self.note(
                f"{where}.context",
                f"the Dockerfile starts FROM {', '.join(dict.fromkeys(registry))}, which needs a registry: to build "
                'with none, start it `ARG BASE_IMAGE` / `FROM ${BASE_IMAGE}` and set parent = "python" '
                "(or another catalog image) in [images." + name + "]",
            )
        return name, _stage_health(stages, spec.get("target"))

    def _build_args(self, raw: Any, where: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in _pairs(raw):
            if value is None:
                self.note(f"{where}.{key}", "takes its value from the shell running compose: write the value")
                continue
            out[key] = self._interpolate(_scalar(value), f"{where}.{key}", secrets_ok=False)
        return out

    def _catalog_health(self, name: str) -> bool | None:
        dockerfile = self.catalog.images[name].context / "Dockerfile"
        return _stage_health(_stages(dockerfile.read_text()), None) if dockerfile.is_file() else None

    def _service_networks(self, svc: _Service, raw: Mapping[str, Any], where: str) -> dict[str, list[str]]:
        nets = raw.get("networks")
        attached: dict[str, list[str]] = {}
        entries = [(n, None) for n in nets] if isinstance(nets, list) else list(_dict(nets).items())
        for cname, options in entries:
            cname = str(cname)
            if cname not in self.network_names:
                self.note(
                    f"{where}.networks.{cname}",
                    "is not defined under the top-level networks (compose refuses that): made a plain network",
                )
            aliases = []
            for key, value in _dict(options).items():
                if key == "aliases":
                    aliases = [str(a) for a in _list(value)]
                else:
                    self.note(f"{where}.networks.{cname}.{key}", "a stack file attaches services with aliases only")
            attached[self._network(cname)] = aliases
        if not attached:
            attached[self._network("default")] = []
        if svc.name != svc.compose_name:  # renamed to a stack-file name: the compose name still resolves
            for aliases in attached.values():
                aliases.append(svc.compose_name)
            svc.comments["networks"] = f"check: {svc.compose_name!r} is an alias (stack names: a-z, 0-9, '-')"
        return attached

    def _ports(self, raw: Any, where: str, image: str) -> list[int]:
        ports: list[int] = []
        remap = CATALOG_PORTS.get(image, {})
        for index, item in enumerate(_list(raw)):
            key = f"{where}.ports[{index}]"
            parsed = _port(item)
            if parsed is None:
                self.note(key, f"{item!r} is not a port this translation reads: add it to ports by hand")
                continue
            containers, host, host_ip, protocol = parsed
            if protocol != "tcp":
                self.note(key, f"{item!r}: stack files publish TCP ports only")
                continue
            why = []
            if host:
                why.append(f"host port {host} is not kept (Docker picks the host port)")
            if host_ip in (None, "", "0.0.0.0", "::"):
                why.append("compose binds every interface (0.0.0.0); stack files publish on 127.0.0.1 only")
            elif host_ip not in ("127.0.0.1", "::1", "localhost"):
                why.append(f"the binding to {host_ip} is not kept: stack files publish on 127.0.0.1 only")
            for port in containers:
                if port in remap:
                    why.append(f"container port {port} became {remap[port]}: the catalog {image} listens there")
                if remap.get(port, port) not in ports:
                    ports.append(remap.get(port, port))
            if why:
                self.note(key, f"{item!r}: " + "; ".join(why))
        return ports

    def _depends(self, raw: Any, where: str) -> list[str]:
        out = []
        entries = [(d, None) for d in raw] if isinstance(raw, list) else list(_dict(raw).items())
        for dep, options in entries:
            dep = str(dep)
            if dep not in self.service_names:
                self.note(f"{where}.depends_on.{dep}", "names no service of this file (compose refuses that): dropped")
                continue
            out.append(dep)
            for key, value in _dict(options).items():
                if key == "condition" and value == "service_completed_successfully":
                    self.note(
                        f"{where}.depends_on.{dep}.condition",
                        "stackcheck waits for a dependency to be ready, not to exit: run one-shot jobs elsewhere",
                    )
                elif key not in ("condition",):
                    self.note(f"{where}.depends_on.{dep}.{key}", "a stack file's depends_on is a list of services")
        return out

    def _replicas(self, raw: Mapping[str, Any], where: str) -> int:
        deploy = _dict(raw.get("deploy"))
        value = deploy.get("replicas", raw.get("scale", 1))
        key = f"{where}.deploy.replicas" if "replicas" in deploy else f"{where}.scale"
        try:
            replicas = int(value)
        except (TypeError, ValueError):
            self.note(key, f"{value!r} is not a number: 1 replica")
            return 1
        if not 1 <= replicas <= MAX_REPLICAS:
            bounded = min(max(replicas, 1), MAX_REPLICAS)
            self.note(key, f"{replicas} replicas: a stack file runs 1 to {MAX_REPLICAS}; {bounded} written")
            return bounded
        return replicas

    def _readiness(self, svc: _Service, raw: Any, image_health: bool | None, where: str) -> str:
        check = _dict(raw)
        test = check.get("test")
        disabled = bool(check.get("disable")) or (isinstance(test, list) and test[:1] == ["NONE"])
        if test is not None and not disabled:
            command = " ".join(map(str, test[1:] if isinstance(test, list) else [test]))
            svc.health_urls += URL.findall(command)
        else:
            command = ""
        timing = ", ".join(f"{k} {check[k]}" for k in ("interval", "timeout", "retries", "start_period") if k in check)
        shown = f"`{command}`" + (f" ({timing})" if timing else "")
        key = f"{where}.healthcheck"
        if disabled:
            self.note(key, "disabled: readiness is the container running")
            return "running"
        if image_health:
            if command:
                self.note(key, f"test {shown} is not carried: the image's own HEALTHCHECK decides readiness")
            return "healthcheck"
        if not command:
            return "running"
        if image_health is False:
            self.note(
                key,
                f"test {shown}: the image has no HEALTHCHECK and a stack file cannot carry one: add "
                f'`HEALTHCHECK CMD {command}` to its Dockerfile, then set ready = "healthcheck"',
            )
            return "running"
        self.note(
            key,
            f"test {shown} is not carried (a stack file has no healthcheck command): readiness waits for "
            'the image\'s own HEALTHCHECK; if it has none, set ready = "running"',
        )
        return "healthcheck"

    def _command(self, raw: Any, where: str) -> list[str]:
        try:
            parts = shlex.split(raw) if isinstance(raw, str) else [_scalar(p) for p in _list(raw)]
        except ValueError as exc:
            self.note(where, f"cannot be split into words ({exc}): written as one word")
            parts = [str(raw)]
        return [self._interpolate(p, where, secrets_ok=False) for p in parts]

    def _tmpfs(self, raw: Any, where: str) -> list[str]:
        out = []
        for item in _list(raw):
            path, _, options = str(item).partition(":")
            if options:
                self.note(f"{where}.tmpfs", f"options {options!r} of {path} are not kept: a stack tmpfs is a path")
            out.append(path)
        return out

    def _volumes(self, svc: _Service, raw: Any, where: str, tmpfs: list[str], named: list[str]) -> list[str]:
        """Bind mounts (returned), tmpfs paths and named volumes ("NAME:/path[:ro]") of a service."""
        mounts = []
        for index, item in enumerate(_list(raw)):
            key = f"{where}.volumes[{index}]"
            if isinstance(item, dict):
                kind, source, target = item.get("type", "volume"), item.get("source"), str(item.get("target", ""))
                mode = "ro" if item.get("read_only") else ""
                extra = sorted(
                    f"{k}.{sub}" if isinstance(item[k], dict) else str(k)
                    for k in set(item) - {"type", "source", "target", "read_only"}
                    for sub in (item[k] if isinstance(item[k], dict) else [None])
                )  # e.g. volume.nocopy
            else:
                parts = str(item).split(":")
                if len(parts) == 1:
                    kind, source, target, mode, extra = "volume", None, parts[0], "", []
                else:
                    source, target, mode = parts[0], parts[1], ":".join(parts[2:])
                    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
                    extra = []
            if kind == "tmpfs":
                tmpfs.append(target)
                continue
            if kind == "bind" and not source:
                self.note(key, "a bind mount without a source")
                continue
            if kind == "volume" and source:
                self._named_volume(key, str(source), target, mode, extra, named)
                continue
            if kind != "bind":
                what = "an anonymous volume" if kind == "volume" else f"a {kind} mount"
                self.note(key, f"{what} at {target}: it lives and dies with its container; name it to keep or share it")
                continue
            # Not resolved: a symlink such as /var/run stays as written (the socket rule looks for it).
            host = Path(os.path.normpath(self.dir / os.path.expanduser(str(source))))
            flags = [m for m in mode.replace(",", ":").split(":") if m]
            dropped = [m for m in flags if m not in ("ro", "rw")]
            if dropped or extra:
                self.note(key, f"mount options {', '.join(dropped + extra)} are not kept")
            if ":" in str(host) or not target.startswith("/"):
                self.note(key, f"{item!r}: a stack mount is HOST:CONTAINER with absolute paths and no ':' in them")
                continue
            if not host.exists():
                self.note(key, f"{host} does not exist here: Docker refuses to bind a missing path")
            access = "ro" if "ro" in flags else "rw"
            mounts.append(f"{host}:{target}" + (":ro" if access == "ro" else ""))
        return mounts

    def _named_volume(self, key: str, source: str, target: str, mode: str, extra: list[str], named: list[str]) -> None:
        name = self.volume_names.get(source)
        if name is None:
            self.note(key, f"named volume {source} is not declared under the top-level volumes (compose refuses that)")
            return
        if not target.startswith("/") or ":" in target:
            self.note(key, f"{source}:{target}: a stack volume mounts at an absolute path without ':'")
            return
        flags = [m for m in mode.replace(",", ":").split(":") if m]
        dropped = [m for m in flags if m not in ("ro", "rw")]
        if dropped or extra:
            self.note(key, f"volume options {', '.join(dropped + extra)} are not kept")
        named.append(f"{name}:{target}" + (":ro" if "ro" in flags else ""))
        self.volumes_used.add(name)

    def _resources(self, svc: _Service, raw: Mapping[str, Any], where: str) -> None:
        deploy = _dict(raw.get("deploy"))
        resources = _dict(deploy.get("resources"))
        limits = _dict(resources.get("limits"))
        memory_key = f"{where}.deploy.resources.limits.memory" if "memory" in limits else f"{where}.mem_limit"
        memory_raw = limits.get("memory", raw.get("mem_limit"))
        if memory_raw is not None:
            memory = _memory(memory_raw)
            if memory is None:
                self.note(memory_key, f'{memory_raw!r} is not a size: write memory = "512m"')
            else:
                svc.keys["memory"] = memory
        cpus_key = f"{where}.deploy.resources.limits.cpus" if "cpus" in limits else f"{where}.cpus"
        cpus_raw = limits.get("cpus", raw.get("cpus"))
        if cpus_raw is not None:
            try:
                svc.keys["cpus"] = float(cpus_raw)
            except (TypeError, ValueError):
                self.note(cpus_key, f"{cpus_raw!r} is not a number of CPUs")
        for key in sorted(set(limits) - {"memory", "cpus"}):
            self.note(f"{where}.deploy.resources.limits.{key}", "a stack file limits memory and cpus only")
        reservations = _dict(resources.get("reservations"))
        for index, device in enumerate(_list(reservations.get("devices"))):
            spec = _dict(device)
            capabilities = [str(c) for c in _list(spec.get("capabilities"))]
            gpu = spec.get("driver") == "nvidia" or "gpu" in capabilities
            key = f"{where}.deploy.resources.reservations.devices[{index}]"
            if gpu:
                count = spec.get("count", spec.get("device_ids", "all"))
                what = f"{spec.get('driver', 'a')} GPU request (count {count}, capabilities {', '.join(capabilities)})"
                svc.lead.append(f"gpu: compose reserves an {what}; {GPU_REASON}")
                self.note(key, f"an {what}: {GPU_REASON}")
            else:
                self.note(key, "a stack file reserves no devices")
        for key in sorted(set(reservations) - {"devices"}):
            self.note(f"{where}.deploy.resources.reservations.{key}", "a stack file sets limits, not reservations")
        for key in sorted(set(resources) - {"limits", "reservations"}):
            self.note(f"{where}.deploy.resources.{key}", "a stack file sets memory and cpus limits only")
        for key in sorted(set(deploy) - {"replicas", "resources"}):
            self.note(f"{where}.deploy.{key}", "a stack file deploys replicas with limits; no orchestrator settings")

    def _sysctls(self, raw: Any, where: str) -> dict[str, str]:
        out = {}
        for key, value in _pairs(raw):
            if key.startswith("net."):
                out[key] = _scalar(value)
            else:
                self.note(f"{where}.sysctls.{key}", "only net.* sysctls (the container's own namespace) are allowed")
        return out

    def _environment(self, svc: _Service, raw: Mapping[str, Any], where: str) -> None:
        files = raw.get("env_file")
        for index, entry in enumerate(_list(files) if files is not None else []):
            spec = _dict(entry) if isinstance(entry, dict) else {"path": entry}
            path = self.dir / os.path.expanduser(str(spec.get("path", "")))
            key = f"{where}.env_file" + (f"[{index}]" if isinstance(files, list) else "")
            if not path.is_file():
                self.note(
                    key,
                    f"{path.resolve()} does not exist here: its variables are not in the stack file; "
                    f"add them under [services.{svc.name}.env]",
                )
                continue
            for name, value in _read_env_file(path).items():
                self._env(svc, name, value, key, interpolate=False)
        for name, value in _pairs(raw.get("environment")):
            self._env(svc, name, value, f"{where}.environment.{name}", interpolate=True)

    def _env(self, svc: _Service, name: str, value: Any, where: str, interpolate: bool) -> None:
        text = None if value is None else _scalar(value)
        if _secret_key(name) and not (text or "").startswith("/"):
            single = VARIABLE.fullmatch(text or "")
            var = (single.group(1) or single.group(4)) if single else None
            svc.env[name] = self._secret(var or name)
            return
        if text is None:
            self.note(where, "takes its value from the shell running compose: write the value in the stack file")
            return
        svc.env[name] = self._interpolate(text, where, secrets_ok=True) if interpolate else text

    def _secret(self, variable: str) -> str:
        name = _slug(variable.replace("_", "-"), "secret")
        if name not in self.secrets:
            self.secrets.append(name)
        return f"${{secret.{name}}}"

    def _interpolate(self, text: str, where: str, secrets_ok: bool) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            var, op, arg = match.group(1) or match.group(4), match.group(2), match.group(3)
            if _secret_key(var):
                if secrets_ok:
                    return self._secret(var)
                self.note(
                    where,
                    f"uses the secret variable ${var}: placeholders are filled in env and files only, so "
                    f"pass it through env as ${{secret.{_slug(var.replace('_', '-'), 'secret')}}}",
                )
                return match.group(0)
            if var in self.dotenv:
                return self.dotenv[var]
            if op in (":-", "-"):
                self.note(where, f"uses ${var}, which compose reads from the shell; its default {arg!r} is written")
                return arg or ""
            self.note(
                where,
                f"uses ${var}, which compose reads from the shell or .env; a stack file has no host variables: "
                "write the value",
            )
            return match.group(0)

        return VARIABLE.sub(replace, text)

    def _secret_files(self, svc: _Service, raw: Any, where: str) -> None:
        for index, entry in enumerate(_list(raw)):
            spec = _dict(entry) if isinstance(entry, dict) else {"source": entry}
            source = str(spec.get("source", ""))
            target = str(spec.get("target", source))
            target = target if target.startswith("/") else f"/run/secrets/{target}"
            if source not in self.top_secrets:
                self.note(f"{where}.secrets[{index}]", f"{source} is not under the top-level secrets; generated anyway")
            for key in sorted(set(spec) - {"source", "target"}):
                self.note(f"{where}.secrets[{index}].{key}", "stack files mount secrets read-only, readable by all")
            svc.files[target] = self._secret(source)

    def _config_files(self, svc: _Service, raw: Any, where: str) -> None:
        for index, entry in enumerate(_list(raw)):
            spec = _dict(entry) if isinstance(entry, dict) else {"source": entry}
            source = str(spec.get("source", ""))
            target = str(spec.get("target", f"/{source}"))
            config = _dict(self.top_configs.get(source))
            key = f"{where}.configs[{index}]"
            if "file" in config:
                path = (self.dir / str(config["file"])).resolve()
                svc.files[target] = {"template_file": _relpath(path, self.out)}
                if not path.is_file():
                    self.note(key, f"{path} does not exist here: the stack file loads once it does")
            elif "content" in config:
                svc.files[target] = self._interpolate(str(config["content"]), key, secrets_ok=True)
            else:
                self.note(key, f"config {source} has no file or content here (external or from a variable)")

    # output

    def _render(self, name: str) -> str:
        entry, entry_comment = self._entrypoint()
        health, health_comment = self._health_path(entry)
        lines = [
            f"# Stack file for {name}, translated from {self.path.name} by `stackcheck init --from-compose`.",
            "# Lines marked `# check:` are guesses; the compose keys this file does not carry are listed at",
            "# the end. Placeholders: ${secret.NAME} is a random per-run value from [secrets] generate.",
            "",
            "[stack]",
            f"name = {_toml(name)}  # check: from the compose project or folder name",
            f"entrypoint = {_toml(entry)}  # {entry_comment}" if entry else f"# entrypoint = {entry_comment}",
            f"health_path = {_toml(health)}  # {health_comment}",
            f"policy = {_toml(POLICY_FILE)}  # merged over stackcheck's default policy",
        ]
        if entry and entry.startswith("https"):
            lines += ["", "# [tls]", '# hostnames = ["localhost", "127.0.0.1"]  # names the per-run certificate covers']
        if self.secrets:
            lines += ["", "[secrets]", f"generate = {_toml(self.secrets)}"]
        for net, internal in self.networks.items():
            lines += ["", f"[networks.{net}]"] + (["internal = true"] if internal else [])
        for volume in self.volume_names.values():
            if volume in self.volumes_used:
                lines += ["", f"[volumes.{volume}]  # a fresh volume for each run, removed with it"]
        for image_name, image in self.images.items():
            lines += ["", f"[images.{image_name}]" + (f"  # {_comment(image.comment)}" if image.comment else "")]
            lines += [f"{_key(k)} = {_toml(v)}" for k, v in image.fields.items()]
        for svc in self.services.values():
            lines += ["", f"[services.{svc.name}]"]
            lines += [f"# {_comment(c)}" for c in svc.lead]
            depends = [self.service_names[d] for d in svc.depends]
            keys = dict(svc.keys)
            if depends:
                keys = {
                    **{k: v for k, v in keys.items() if k != "ready"},
                    "depends_on": depends,
                    "ready": keys["ready"],
                }
            for key, value in keys.items():
                comment = svc.comments.get(key)
                lines.append(f"{key} = {_toml(value)}" + (f"  # {_comment(comment)}" if comment else ""))
            if svc.name == (urlsplit(entry).hostname if entry else None) and entry and entry.startswith("https"):
                lines.append(
                    "# check: stackcheck makes a CA and certificate per run; mount them instead of your own, e.g. "
                    'files = { "/etc/nginx/tls/server.crt" = { tls = "cert" }, "/etc/nginx/tls/server.key" = '
                    '{ tls = "key" } }'
                )
            for table, values in ((f"services.{svc.name}.env", svc.env), (f"services.{svc.name}.files", svc.files)):
                if values:
                    lines += [f"[{table}]", *(f"{_key(k)} = {_toml(v)}" for k, v in values.items())]
        lines += ["", "# -- not translated (`stackcheck init` listed these too) " + "-" * 40]
        lines += [f"# {_comment(n.line())}" for n in self.notes.values()] or ["# nothing"]
        return "\n".join(lines) + "\n"

    def _entrypoint(self) -> tuple[str | None, str]:
        for scheme, wanted in (("https", HTTPS_PORTS), ("http", HTTP_PORTS)):
            for svc in self.services.values():
                port = next((p for p in wanted if p in svc.keys.get("ports", [])), None)
                if port is not None:
                    preferred = "" if scheme == "https" else "; no service publishes 443/8443"
                    return f"{scheme}://{svc.name}:{port}", f"check: the service publishing {port}{preferred}"
        published = next((s for s in self.services.values() if s.keys.get("ports")), None)
        if published is not None:
            port = published.keys["ports"][0]
            return None, f'"http://{published.name}:{port}"  # check: no service publishes 443/8443/80/8080'
        return None, '"https://SERVICE:PORT"  # check: no service publishes a port; the stack has no HTTP edge'

    def _health_path(self, entry: str | None) -> tuple[str, str]:
        entry_service = urlsplit(entry).hostname if entry else None
        candidates = [(s.name == entry_service, s.name, u) for s in self.services.values() for u in s.health_urls]
        if not candidates:
            return "/", "check: no healthcheck URL seen; the path that answers 200 when the stack is up"
        # The entry's own URL first, then the shortest path that says "health".
        _, service, url = min(candidates, key=lambda c: (not c[0], "health" not in c[2], len(urlsplit(c[2]).path)))
        path = urlsplit(url).path or "/"
        return path, f"check: from {service}'s healthcheck URL"

    def _policy_text(self, name: str) -> str:
        entry, _ = self._entrypoint()
        return _policy(
            _Facts(
                name,
                frozenset(str(s.keys["image"]) for s in self.services.values()),
                tuple(self.services),
                tuple(s.name for s in self.services.values() if s.keys.get("read_only")),
                entry,
                self._health_path(entry)[0],
            )
        )


HANDLED_SERVICE_KEYS = {
    "image", "build", "ports", "environment", "env_file", "healthcheck", "depends_on", "networks", "user",
    "read_only", "tmpfs", "cap_drop", "cap_add", "deploy", "mem_limit", "cpus", "volumes", "privileged",
    "command", "secrets", "configs", "sysctls", "scale",
}  # fmt: skip


# -- the starter policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the starter policy is decided on."""

    name: str
    images: frozenset[str]  # the services' images (catalog names where they are catalog images)
    services: tuple[str, ...]
    read_only: tuple[str, ...]  # services with a read-only root filesystem
    entrypoint: str | None
    health_path: str

    @property
    def https(self) -> bool:
        return bool(self.entrypoint and self.entrypoint.startswith("https:"))


def _policy(facts: _Facts, active: bool = False) -> str:
    """The routes to look at, values for the default rules' empty subject parameters (a path, the
    read-only services), and for the rules that cannot apply to this stack a reason to disable each.
    For a translation every line is commented out (the user decides); ``active`` writes them as
    settings (the starter stack, whose every part is known)."""
    on = "" if active else "# "
    default = Policy.load()
    disabled: dict[str, str] = {}
    settings: list[str] = []
    for rule in default.rules.values():
        if not rule.enabled:
            continue
        reason = _inapplicable(rule.area, rule.params, facts)
        if reason:
            disabled[rule.id] = reason
            continue
        # An empty subject parameter (path = "", paths = [], services = []) means "none": the rule
        # is not applicable until the stack's policy names its subject.
        for key, value in rule.params.items():
            if value not in ("", []) or key not in ("path", "paths", "services"):
                continue
            suggestion = _subject(rule.area, key, facts)
            if suggestion is None:
                disabled[rule.id] = (
                    f"this stack names no {key} for it yet: set [rules.{rule.id}] {key}, then delete this line"
                )
                settings += ["", f"# [rules.{rule.id}]", f'# {key} = "/..."  # {rule.description}']
            else:
                check = "" if active else "check: "
                settings += [
                    "",
                    f"{on}[rules.{rule.id}]",
                    f"{on}{key} = {_toml(suggestion)}  # {check}{rule.description}",
                ]
    intro = (
        ["# Everything here is commented out: uncomment what fits this stack."]
        if not active
        else ["# Delete a [disabled] line once the stack has what that rule checks."]
    )
    lines = [
        f"# Policy for {facts.name}: merged over stackcheck's default policy, rule by rule.",
        *intro,
        "",
        "# [policy]",
        f"# fail_on = {_toml(default.fail_on.value)}  # the gate fails on a failed rule at or above this severity",
        "",
        "# Which responses the header rules look at: this stack's own routes.",
        f"{on}[http]",
        f"{on}routes = {_toml(['/'] + ([facts.health_path] if facts.health_path != '/' else []))}",
        '# rate_limited_path = "/..."  # a rate-limited route: its 429 answer is checked for headers too',
    ]
    if settings:
        lines += ["", "# The default rules' subjects: this stack's paths and services.", *settings[1:]]
    lines += [
        "",
        "# Rules that cannot apply to this stack, each with its reason. A disabled rule shows as",
        "# DISABLED with its reason; one left on that finds nothing is NOT EVALUATED and fails the gate.",
        f"{on}[disabled]",
        *([f"{on}{_key(k)} = {_toml(v)}" for k, v in disabled.items()] or ["# (every default rule applies)"]),
    ]
    return "\n".join(lines) + "\n"


def _subject(area: Area, key: str, facts: _Facts) -> str | list[str] | None:
    if key == "services":
        return list(facts.read_only or facts.services)
    if area is Area.HEALTH or (area is Area.RATE_LIMITS and key == "paths"):  # health routes
        return facts.health_path if key == "path" else [facts.health_path]
    return None


def _inapplicable(area: Area, params: Mapping[str, Any], facts: _Facts) -> str | None:
    wanted = params.get("images")
    if isinstance(wanted, list):
        return None if facts.images & set(wanted) else f"no {' or '.join(map(str, wanted))} service in this stack"
    if "links" in params:
        return "no [links] in this stack: declare the dependency links to cut, then enable it"
    if area in (Area.HEADERS, Area.RATE_LIMITS, Area.HEALTH, Area.TLS) and not facts.entrypoint:
        return "the stack has no HTTP entrypoint"
    if area is Area.TLS and not facts.https:
        return "the entrypoint is plain HTTP: no TLS to check"
    return None


# -- small helpers ------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(raw: Any) -> list[tuple[str, Any]]:
    """A compose mapping written either as a mapping or as a list of "KEY=VALUE" / "KEY" items."""
    if isinstance(raw, dict):
        return [(str(k), v) for k, v in raw.items()]
    pairs: list[tuple[str, Any]] = []
    for item in _list(raw):
        key, sep, value = str(item).partition("=")
        pairs.append((key, value if sep else None))
    return pairs


def _slug(raw: str, fallback: str) -> str:
    """A stack-file name: lower-case letters, digits and '-', starting with a letter, at most 41."""
    text = re.sub(r"[^a-z0-9-]+", "-", raw.lower())
    text = re.sub(r"-{2,}", "-", re.sub(r"^[^a-z]+", "", text))[:41].strip("-")
    return text if NAME.match(text) else fallback


def _secret_key(name: str) -> bool:
    upper = name.upper()
    return any(w in upper for w in SECRET_WORDS) and not upper.endswith(("_FILE", "_PATH", "_DIR"))


def _repository(ref: str) -> str | None:
    """``registry:5000/team/app:1.2@sha256:...`` -> ``registry:5000/team/app``."""
    if not ref:
        return None
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _relpath(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _port(item: Any) -> tuple[list[int], str | None, str | None, str] | None:
    """(container ports, host port, host ip, protocol) of a compose port entry, or None."""
    if isinstance(item, dict):
        target, published = item.get("target"), item.get("published")
        if not isinstance(target, int):
            return None
        return [target], str(published) if published else None, item.get("host_ip"), str(item.get("protocol", "tcp"))
    text, _, protocol = str(item).partition("/")
    host_ip = None
    if text.startswith("["):
        host_ip, _, text = text[1:].partition("]:")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, parts = parts[0], parts[1:]
    if len(parts) > 2:
        return None
    host = parts[0] if len(parts) == 2 and parts[0] else None
    start, _, end = parts[-1].partition("-")
    if not start.isdigit() or (end and not end.isdigit()):
        return None
    ports = list(range(int(start), int(end or start) + 1))
    if not ports or not all(0 < p < 65536 for p in ports) or len(ports) > 100:
        return None
    return ports, host, host_ip, protocol or "tcp"


def _memory(raw: Any) -> str | None:
    """A compose size (bytes, 512M, 1gb, 1.5g) as the stack file writes it (512m, 1g)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(raw).strip().lower())
    if not match or isinstance(raw, bool):
        return None
    size = float(match.group(1)) * 1024 ** "bkmg".index(match.group(2) or "b")
    for unit, power in (("g", 3), ("m", 2), ("k", 1)):
        if size >= 1024**power and size % 1024**power == 0:
            return f"{int(size // 1024**power)}{unit}"
    return f"{max(1, -(-int(size) // 1024))}k"


def _read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them: comments, `export`, quotes."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key.strip()] = value
    return out


def _stages(text: str) -> list[tuple[str, str, list[str]]]:
    """A Dockerfile's stages: (name, FROM image, instruction lines)."""
    stages: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM" and len(words) > 1:
            image = next((w for w in words[1:] if not w.startswith("--")), "scratch")
            name = words[-1] if len(words) > 3 and words[-2].upper() == "AS" else str(len(stages))
            stages.append((name, image, []))
        elif stages:
            stages[-1][2].append(line)
    return stages


def _stage_health(stages: list[tuple[str, str, list[str]]], target: Any) -> bool:
    """Whether the built stage (the target, else the last) has a HEALTHCHECK, through its parent stages."""
    by_name = {name: (source, lines) for name, source, lines in stages}
    current = str(target) if target in by_name else (stages[-1][0] if stages else None)
    seen = set()
    while current in by_name and current not in seen:
        seen.add(current)
        source, lines = by_name[current]
        checks = [ln.split()[1:2] for ln in lines if ln.split()[0].upper() == "HEALTHCHECK"]
        if checks:
            return checks[-1] != ["NONE"]
        current = source
    return False


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group(0)):04x}", escaped)
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else _toml(key)


def _comment(text: str) -> str:
    return " ".join(text.split())


STARTER_STACK = """\
# A starter stack file (`stackcheck init`): one nginx serving a page over TLS. Every service,
# network and objective is data; README "Stack files" lists the keys. Placeholders:
#   ${secret.NAME}         a random per-run secret from [secrets] generate
#   ${upstream.SVC:PORT x} one nginx `server` line per replica of SVC, each ending in x

[stack]
name = "@NAME@"  # check: lower-case letters, digits and '-'
entrypoint = "https://nginx:8443"  # what stackcheck tests: scheme://SERVICE:CONTAINER_PORT
health_path = "/healthz"  # answers 200 when the stack is up
policy = "policy.toml"  # merged over stackcheck's default policy

[tls]
hostnames = ["localhost", "127.0.0.1"]  # names the per-run certificate covers

# [secrets]
# generate = ["db-password"]  # then use "${secret.db-password}" in env or files

[networks.edge]
# [networks.internal]
# internal = true  # no egress: backends and data stores

[services.nginx]
image = "nginx"  # a catalog image, built locally (`stackcheck images list`)
networks = { edge = [] }
ports = [8080, 8443]  # container ports, published on 127.0.0.1 at ports Docker picks
memory = "128m"
cpus = 0.5
read_only = true
tmpfs = ["/tmp"]
cap_drop = ["ALL"]
# ready = "healthcheck"  # the default: the image's HEALTHCHECK reports healthy
# depends_on = ["app"]

[services.nginx.files]
"/etc/nginx/tls/server.crt" = { tls = "cert" }  # the run's certificate, signed by the run's CA
"/etc/nginx/tls/server.key" = { tls = "key" }
"/etc/nginx/conf.d/default.conf" = '''
server {
    listen 8080 default_server;
    location = /healthz { access_log off; default_type text/plain; return 200 "ok\\n"; }
    location / { return 301 https://$host$request_uri; }
}
server {
    listen 8443 ssl http2 default_server;
    ssl_certificate /etc/nginx/tls/server.crt;
    ssl_certificate_key /etc/nginx/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;  # TLS 1.2: AEAD suites with forward secrecy only
    ssl_prefer_server_ciphers off;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;  # Mozilla intermediate: no X448, no secp521r1
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-Frame-Options "DENY" always;
    add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
    add_header Referrer-Policy "no-referrer" always;
    location = /healthz { access_log off; default_type text/plain; return 200 "ok\\n"; }
    location = / { default_type text/plain; return 200 "hello from @NAME@\\n"; }
    location / { return 404; }  # unknown routes: 404, with the headers above (`always`)
    # location /api/ { proxy_pass http://app:8000; }  # an app service behind the edge
}
'''

# Objectives: the load gate and chaos scenarios judge against these.
# [objectives.load.default]
# p95_ms = 500
# max_error_rate = 0.01
"""
