"""Locally built images with content-addressed tags.

The catalog (``stacks/images/images.toml``) names each image, its build context, an optional
parent image and the Go programs to compile into it. An image's tag is a hash of its build
context, its Go pins, engine-specific build args and its parent's hash, so an unchanged image
is never rebuilt. The base it was built on is recorded in a label: when the base changes the
image is rebuilt under the same tag.

Offline the base is a ``debootstrap`` of Debian bookworm imported with ``docker import``;
online it is ``debian:bookworm-slim`` from a registry. The Dockerfiles are the same for both
(``ARG BASE_IMAGE``), so offline is a mode, not a fork.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import docker
import docker.errors

from stackcheck import resources, tomldata
from stackcheck.errors import ImageBuildError, ImageError, ImageMissingError
from stackcheck.stackfile import StackSpec
from stackcheck.tomldata import Reader

LABEL = "org.stackcheck"
IGNORED = {"__pycache__", ".pytest_cache", ".mypy_cache"}
log = logging.getLogger(__name__)


def _env_mode() -> bool | None:
    """``STACKCHECK_OFFLINE=1|0`` forces a mode; unset, stackcheck decides per engine."""
    raw = os.environ.get("STACKCHECK_OFFLINE", "").strip().lower()
    if not raw:
        return None
    return raw not in ("0", "false", "no")


def catalog_path() -> Path:
    """The shipped catalog, or the one ``STACKCHECK_IMAGES`` names."""
    return Path(os.environ.get("STACKCHECK_IMAGES") or resources.stacks_dir() / "images" / "images.toml")


class BuildStatus(Enum):
    BUILT = "built"
    CACHED = "cached"


@dataclass(frozen=True)
class GoProgram:
    package: str  # module path of the main package
    version: str  # pinned module version, or "local" for source in the build context
    binary: str  # name of the file placed in the context's bin/ folder
    ldflags: str = ""  # e.g. stamping the version that release builds stamp
    cgo_include: str = ""  # set: a cgo build (host gcc/g++) with this context folder on the include path
    # Context files applied with `patch -p1` to the module's source before the build: a fix backported
    # to the pinned version. The package must be its module's root (`go mod download` takes a module).
    patches: tuple[str, ...] = ()

    def key(self) -> str:
        cgo = f" cgo_include={self.cgo_include}" if self.cgo_include else ""
        patched = f" patches={','.join(self.patches)}" if self.patches else ""
        return f"{self.package}@{self.version}->{self.binary} ldflags={self.ldflags}{cgo}{patched}"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    context: Path
    parent: str | None = None
    go: tuple[GoProgram, ...] = ()
    engine_args: tuple[str, ...] = ()
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    repo: str = ""  # tag repository; default stackcheck/NAME (a stack's own: stackcheck/STACK-NAME)
    generate: str = ""  # a Python script of the context run on the host first: `SCRIPT DIR` adds files to DIR

    @property
    def repository(self) -> str:
        return self.repo or f"stackcheck/{self.name}"


@dataclass(frozen=True)
class BaseSpec:
    offline_tag: str
    online_image: str
    suite: str
    mirror: str


@dataclass
class Catalog:
    base: BaseSpec
    images: dict[str, ImageSpec] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # a stack's images used as-is: name -> reference

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        path = path or catalog_path()
        top = Reader(path, tomldata.read(path, ImageError, "image catalog", "restore it from git"), "", ImageError)
        top.only({"base", "image"})
        base_table = top.table("base")
        base_table.only({"offline_tag", "online_image", "suite", "mirror"})
        base = BaseSpec(
            **{k: base_table.get(k, str, required=True) for k in ("offline_tag", "online_image", "suite", "mirror")}
        )
        images: dict[str, ImageSpec] = {}
        table = top.table("image")
        for name in table.data:
            raw = table.table(table.name(name, "image"))
            raw.only({"context", "parent", "go", "engine_args", "generate"})
            programs = []
            for index, prog in enumerate(raw.get("go", list, [])):
                if not isinstance(prog, dict):
                    raise raw.fail("go", f"entry {index} is not a table", 'write go = [{ package = "...", ... }]')
                entry = Reader(path, prog, f"{raw.where}.go[{index}]", ImageError)
                entry.only({"package", "version", "binary", "ldflags", "cgo_include", "patches"})
                fields = {k: entry.get(k, str, required=True) for k in ("package", "version", "binary")}
                fields |= {k: entry.get(k, str, "") for k in ("ldflags", "cgo_include")}
                programs.append(GoProgram(**fields, patches=entry.str_list("patches")))
            images[name] = ImageSpec(
                name=name,
                context=(path.parent / raw.get("context", str, required=True)).resolve(),
                parent=raw.get("parent", str),
                go=tuple(programs),
                engine_args=raw.str_list("engine_args"),
                generate=raw.get("generate", str, ""),
            )
        return cls(base, images)

    def for_stack(self, spec: StackSpec) -> Catalog:
        """This catalog plus the stack's own images (``[images.NAME]``), which win over catalog names."""
        images, refs = dict(self.images), {}
        for name, source in spec.images.items():
            if source.ref is not None:
                refs[name] = source.ref
                images.pop(name, None)
                continue
            if source.parent is not None and source.parent not in self.images:
                raise ImageMissingError(
                    f"{spec.path}: [images.{name}] parent {source.parent!r} is not a catalog image",
                    f"use one of: {', '.join(sorted(self.images))}",
                )
            assert source.context is not None
            images[name] = ImageSpec(
                name, source.context, source.parent, dockerfile=source.dockerfile, args=source.args,
                repo=f"stackcheck/{spec.name}-{name}",
            )  # fmt: skip
        return Catalog(self.base, images, refs)

    def needed(self, spec: StackSpec) -> list[str]:
        """The images a stack boots from (built here), plus the reaper."""
        names = {svc.image for svc in spec.services.values() if svc.image in self.images}
        return sorted(names | {"ryuk"})

    def closure(self, names: Iterable[str]) -> list[ImageSpec]:
        """The named images and their parents, parents first."""
        ordered: list[ImageSpec] = []

        def visit(name: str) -> None:
            if name not in self.images:
                known = ", ".join(sorted(self.images))
                raise ImageMissingError(f"unknown image {name!r}", f"use one of: {known}")
            spec = self.images[name]
            if spec.parent:
                visit(spec.parent)
            if spec not in ordered:
                ordered.append(spec)

        for name in names:
            visit(name)
        return ordered

    def content_hash(self, name: str) -> str:
        spec = self.images[name]
        digest = hashlib.sha256(b"stackcheck-image-v1\0")
        for rel, path in _context_files(spec.context):
            digest.update(rel.encode() + b"\0" + bytes([os.access(path, os.X_OK)]) + path.read_bytes() + b"\0")
        for prog in spec.go:
            digest.update(f"go:{prog.key()}\0".encode())
        if spec.generate:
            digest.update(f"generate:{spec.generate}\0".encode())
        if spec.dockerfile != "Dockerfile":  # (only when set: catalog tags stay what they were)
            digest.update(f"dockerfile:{spec.dockerfile}\0".encode())
        for key, value in sorted(spec.args.items()):
            digest.update(f"build-arg:{key}={value}\0".encode())
        for key, value in sorted(engine_build_args(spec).items()):
            digest.update(f"arg:{key}={value}\0".encode())
        if spec.parent:
            digest.update(f"parent:{self.content_hash(spec.parent)}\0".encode())
        return digest.hexdigest()[:12]

    def tag(self, name: str) -> str:
        return f"{self.images[name].repository}:{self.content_hash(name)}"


def _context_files(context: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(context.rglob("*")):
        rel = path.relative_to(context)
        if path.is_file() and not IGNORED.intersection(rel.parts) and path.suffix != ".pyc":
            yield rel.as_posix(), path


def engine_build_args(spec: ImageSpec) -> dict[str, str]:
    """Build args whose value depends on the engine host (e.g. the docker socket's group)."""
    args: dict[str, str] = {}
    for key in spec.engine_args:
        if key == "DOCKER_GID":
            # The reaper runs as a non-root user that needs the socket's group to reach the API.
            sock = Path("/var/run/docker.sock")
            args[key] = str(sock.stat().st_gid) if sock.exists() else "0"
        else:
            raise ImageBuildError(f"unknown engine build arg {key!r} in the image catalog", "use DOCKER_GID")
    return args


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    status: BuildStatus
    seconds: float


@dataclass(frozen=True)
class ImageStatus:
    name: str
    tag: str
    present: bool
    size_mb: float | None


def _go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise ImageBuildError(
            "the Go toolchain is needed to build Toxiproxy and the reaper, but `go` is not on PATH",
            "install Go >= 1.22 (https://go.dev/dl or your package manager) and put it on PATH",
        )
    return found


def _run(cmd: list[str], cwd: Path | None, env: dict[str, str], what: str, fix: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode})", fix, tail)


class ImageBuilder:
    """Builds the catalog's images, logging one line per event (logger ``stackcheck.images``)."""

    def __init__(
        self,
        client: docker.DockerClient,
        catalog: Catalog | None = None,
        offline: bool | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.catalog = catalog or Catalog.load()
        self.cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stackcheck"
        self._offline = offline if offline is not None else _env_mode()

    # -- offline or online ------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """The mode asked for, else the one remembered for this engine, else what works here."""
        if self._offline is None:
            remembered = self._modes().get(self._engine_id())
            self._offline = remembered if remembered is not None else self._detect_mode()
        return self._offline

    def _engine_id(self) -> str:
        return str(self.client.info().get("ID", "unknown"))

    def _modes_file(self) -> Path:
        return self.cache_dir / "engine-modes.json"

    def _modes(self) -> dict[str, bool]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self._modes_file().read_text())
            return {k: v for k, v in data.items() if isinstance(v, bool)}
        return {}

    def _remember_mode(self) -> None:
        modes = {**self._modes(), self._engine_id(): self.offline}
        self._modes_file().parent.mkdir(parents=True, exist_ok=True)
        self._modes_file().write_text(json.dumps(modes, indent=1))

    def _detect_mode(self) -> bool:
        """Online where the registry's base is here or can be pulled; otherwise offline (debootstrap)."""
        base = self.catalog.base
        if self._image(base.online_image) is not None:
            return False
        if self._image(base.offline_tag) is not None:
            return True
        try:
            self.client.images.pull(base.online_image)
        except docker.errors.APIError as exc:
            log.info(f"no registry answers ({exc.explanation or exc}): building offline from a debootstrap base")
            return True
        return False

    # -- status -----------------------------------------------------------------------------
    def _image(self, tag: str) -> docker.models.images.Image | None:
        try:
            return self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None

    def status(self) -> list[ImageStatus]:
        rows = []
        for name in self.catalog.images:
            tag = self.catalog.tag(name)
            image = self._image(tag)
            size = round(image.attrs["Size"] / 1e6, 1) if image else None
            rows.append(ImageStatus(name, tag, image is not None, size))
        return rows

    # -- base -------------------------------------------------------------------------------
    def base_image(self) -> str:
        return self.catalog.base.offline_tag if self.offline else self.catalog.base.online_image

    def ensure_base(self) -> str:
        """Return the id of the base image, creating (offline) or pulling (online) it when absent."""
        ref = self.base_image()
        image = self._image(ref)
        if image is not None:
            self._remember_mode()
            return str(image.id)
        if self.offline:
            base_id = self._debootstrap_base(ref)
        else:
            log.info(f"pulling base {ref}")
            try:
                base_id = str(self.client.images.pull(ref).id)
            except docker.errors.APIError as exc:
                raise ImageBuildError(
                    f"cannot pull the base image {ref}: {exc.explanation or exc}",
                    "without a registry, build offline: `stackcheck images build --offline`",
                ) from exc
        self._remember_mode()
        return base_id

    def _debootstrap_base(self, ref: str) -> str:
        if shutil.which("debootstrap") is None:
            raise ImageBuildError(
                f"the offline base {ref} is missing and `debootstrap` is not installed",
                "run `apt-get install -y debootstrap` (as root), or build online without --offline",
            )
        if os.geteuid() != 0:
            raise ImageBuildError(
                f"the offline base {ref} is missing and debootstrap needs root",
                "run `sudo stackcheck images build --offline` once; later builds need no root",
            )
        base = self.catalog.base
        started = time.monotonic()
        log.info(f"creating offline base {ref} with debootstrap {base.suite} (about a minute)")
        with tempfile.TemporaryDirectory(prefix="stackcheck-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(
                ["debootstrap", "--variant=minbase", "--include=ca-certificates", base.suite, str(rootfs), base.mirror],
                None,
                dict(os.environ),
                "debootstrap",
                f"check that {base.mirror} is reachable and the disk has ~500 MB free",
            )
            repo, tag = ref.rsplit(":", 1)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            self.client.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag)
            if tar.wait() != 0:
                # A truncated rootfs must not stay tagged as the base.
                self.client.images.remove(ref, force=True)
                raise ImageBuildError(f"packing the rootfs for {ref} failed", "check free disk space and retry")
        image = self.client.images.get(ref)
        log.info(f"created offline base {ref} in {time.monotonic() - started:.1f}s")
        return str(image.id)

    # -- build ------------------------------------------------------------------------------
    def build(self, only: Iterable[str] | None = None, force: bool = False) -> list[BuildResult]:
        specs = self.catalog.closure(only if only else self.catalog.images)
        base_id = self.ensure_base()
        results = []
        for index, spec in enumerate(specs, 1):
            prefix = f"[{index}/{len(specs)}] {spec.name:<16}"
            tag = self.catalog.tag(spec.name)
            started = time.monotonic()
            existing = self._image(tag)
            if existing is not None and not force and existing.labels.get(f"{LABEL}.base-id") == base_id:
                results.append(BuildResult(spec.name, tag, BuildStatus.CACHED, time.monotonic() - started))
                log.info(f"{prefix} up to date   {tag}")
                continue
            log.info(f"{prefix} building     {tag}")
            self._build_one(spec, tag, base_id)
            elapsed = time.monotonic() - started
            results.append(BuildResult(spec.name, tag, BuildStatus.BUILT, elapsed))
            log.info(f"{prefix} built        {tag} in {elapsed:.1f}s")
        if all(r.status is BuildStatus.CACHED for r in results):
            log.info(f"nothing to rebuild: all {len(results)} images are up to date")
        return results

    def _build_one(self, spec: ImageSpec, tag: str, base_id: str) -> None:
        if not (spec.context / spec.dockerfile).is_file():
            raise ImageBuildError(
                f"image {spec.name}: no {spec.dockerfile} in {spec.context}",
                f"add {spec.context / spec.dockerfile} or fix the image's `context`",
            )
        with tempfile.TemporaryDirectory(prefix=f"stackcheck-ctx-{spec.name}-") as tmp:
            ctx = Path(tmp)
            for rel, path in _context_files(spec.context):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, ctx / rel)
            if spec.go:
                self._go_build(spec, ctx / "bin")
            if spec.generate:  # e.g. a model file made with a PyPI package the base image lacks
                what, fix = f"image {spec.name}: {spec.generate}", f"install what it imports into {sys.executable}"
                _run([sys.executable, str(ctx / spec.generate), str(ctx)], ctx, dict(os.environ), what, fix)
            args = {"BASE_IMAGE": self.base_image(), **engine_build_args(spec), **spec.args}
            if spec.parent:
                args["PARENT_IMAGE"] = self.catalog.tag(spec.parent)
            labels = {
                f"{LABEL}.image": spec.name,
                f"{LABEL}.hash": tag.rsplit(":", 1)[1],
                f"{LABEL}.base": self.base_image(),
                f"{LABEL}.base-id": base_id,
            }
            self._docker_build(spec.name, ctx, tag, args, labels, spec.dockerfile)

    def _go_build(self, spec: ImageSpec, out: Path) -> None:
        go = _go_binary()
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -trimpath"}
        env.setdefault("GOPATH", str(self.cache_dir / "gopath"))
        for prog in spec.go:
            include = f"-I{spec.context / prog.cgo_include}"
            cgo = {"CGO_ENABLED": "1", "CGO_CPPFLAGS": include} if prog.cgo_include else {}
            fix = "check that the Go module proxy is reachable (GOPROXY) and the version exists"
            fix += "; cgo needs gcc and g++ (apt-get install -y g++)" if prog.cgo_include else ""
            flags = ["-ldflags", prog.ldflags] if prog.ldflags else []
            if prog.version == "local":
                cmd = [go, "build", *flags, "-o", str(out / prog.binary), prog.package]
                _run(cmd, spec.context, {**env, **cgo}, f"go build {prog.package}", fix)
                continue
            key = prog.key().encode() + b"".join((spec.context / rel).read_bytes() for rel in prog.patches)
            gobin = self.cache_dir / "gobin" / hashlib.sha256(key).hexdigest()[:16]
            binary = gobin / Path(prog.package).name
            if binary.exists():
                pass  # built before, with the same version, flags and patches
            elif prog.patches:
                source = self._patched_source(go, prog, spec.context, env, gobin.name)
                gobin.mkdir(parents=True, exist_ok=True)
                cmd = [go, "build", *flags, "-o", str(binary), "."]
                _run(cmd, source, {**env, **cgo}, f"go build {prog.package}", fix)
            else:
                _run(
                    [go, "install", *flags, f"{prog.package}@{prog.version}"],
                    None,
                    {**env, **cgo, "GOBIN": str(gobin)},
                    f"go install {prog.package}@{prog.version}",
                    fix,
                )
            shutil.copy2(binary, out / prog.binary)

    def _patched_source(self, go: str, prog: GoProgram, context: Path, env: dict[str, str], key: str) -> Path:
        """A writable copy of the module's source with the program's patches applied (cached by key)."""
        source = self.cache_dir / "gosrc" / key
        if source.exists():
            return source
        module = f"{prog.package}@{prog.version}"
        if shutil.which("patch") is None:
            raise ImageBuildError(f"`patch` is needed to apply {', '.join(prog.patches)}", "apt-get install -y patch")
        fix = "check that the Go module proxy answers (GOPROXY), the version exists and the package is a module root"
        cmd = [go, "mod", "download", "-json", module]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        try:
            downloaded = Path(json.loads(proc.stdout)["Dir"])
        except (ValueError, KeyError) as exc:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise ImageBuildError(f"go mod download {module} failed (exit {proc.returncode})", fix, tail) from exc
        staging = source.with_name(f"{key}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(downloaded, staging)
        for path in staging.rglob("*"):  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        staging.chmod(0o755)
        for rel in prog.patches:
            _run(
                ["patch", "-p1", "--batch", "--forward", "-i", str(context / rel)],
                staging,
                env,
                f"applying {rel} to {module}",
                f"the patch does not apply: rewrite {rel} for {prog.version} (or drop it if the version has the fix)",
            )
        staging.rename(source)
        return source

    def _docker_build(
        self, name: str, ctx: Path, tag: str, args: dict[str, str], labels: dict[str, str], dockerfile: str
    ) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=25)
        try:
            stream = self.client.api.build(
                path=str(ctx), dockerfile=dockerfile, tag=tag, buildargs=args, labels=labels, rm=True, forcerm=True,
                decode=True, pull=False,
            )  # fmt: skip
            for chunk in stream:
                if "stream" in chunk:
                    tail.extend(line for line in chunk["stream"].splitlines() if line.strip())
                if "error" in chunk:
                    tail.append(chunk["error"].strip())
                    raise ImageBuildError(
                        f"building image {name} ({tag}) failed", _build_fix(chunk["error"]), "\n".join(tail)
                    )
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"building image {name} ({tag}) failed: {exc.explanation or exc}", _build_fix(str(exc)), "\n".join(tail)
            ) from exc


def _build_fix(error: str) -> str:
    if "no space left on device" in error:
        return "free disk space (e.g. `docker system prune`), then build again"
    if "pull access denied" in error or "lookup" in error or "not found" in error:
        return "the base image is missing and no registry answers: build with --offline"
    return "read the log lines above; fix the Dockerfile or the network, then run `stackcheck images build` again"


def require(name: str, client: docker.DockerClient, catalog: Catalog | None = None) -> str:
    """The tag of a built catalog image, or ImageMissingError with the exact build command."""
    catalog = catalog or Catalog.load()
    if name not in catalog.images:
        raise ImageMissingError(f"unknown image {name!r}", f"use one of: {', '.join(sorted(catalog.images))}")
    tag = catalog.tag(name)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise ImageMissingError(
            f"image {tag} ({name}) is not built",
            f"run `stackcheck images build --only {name}` (with `--stack FILE` for a stack's own image)",
        ) from None
    return tag


def resolve(image: str, client: docker.DockerClient, catalog: Catalog | None = None) -> str:
    """A stack's ``image``: a catalog or stack image name (built here) or a reference that must exist locally."""
    catalog = catalog or Catalog.load()
    image = catalog.refs.get(image, image)
    if image in catalog.images or not ("/" in image or ":" in image):
        return require(image, client, catalog)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ImageMissingError(
            f"image {image} is not present in the local engine (stackcheck never pulls at run time)",
            f"`docker pull {image}` where a registry is reachable, or `docker build -t {image} ...`",
        ) from None
    return image
