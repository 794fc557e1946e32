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
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import docker
import docker.errors

from stackcheck import resources
from stackcheck.errors import ImageBuildError, ImageError, ImageMissingError

LABEL = "org.stackcheck"
IGNORED = {"__pycache__", ".pytest_cache", ".mypy_cache"}
Progress = Callable[[str], None]


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

    def key(self) -> str:
        return f"{self.package}@{self.version}->{self.binary} ldflags={self.ldflags}"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    context: Path
    parent: str | None = None
    go: tuple[GoProgram, ...] = ()
    engine_args: tuple[str, ...] = ()


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

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        path = path or catalog_path()
        try:
            data = tomllib.loads(path.read_text())
            base = BaseSpec(**data["base"])
            images: dict[str, ImageSpec] = {}
            for name, raw in data["image"].items():
                images[name] = ImageSpec(
                    name=name,
                    context=(path.parent / raw["context"]).resolve(),
                    parent=raw.get("parent"),
                    go=tuple(GoProgram(**g) for g in raw.get("go", ())),
                    engine_args=tuple(raw.get("engine_args", ())),
                )
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise ImageError(
                f"the image catalog {path} is unreadable or malformed: {type(exc).__name__}: {exc}",
                "restore it from git, or fix the named key ([base], [image.NAME] with context/parent/go)",
            ) from exc
        return cls(base, images)

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
        for key, value in sorted(engine_build_args(spec).items()):
            digest.update(f"arg:{key}={value}\0".encode())
        if spec.parent:
            digest.update(f"parent:{self.content_hash(spec.parent)}\0".encode())
        return digest.hexdigest()[:12]

    def tag(self, name: str) -> str:
        return f"stackcheck/{name}:{self.content_hash(name)}"


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
    """Builds the catalog's images. ``progress`` receives one human-readable line per event."""

    def __init__(
        self,
        client: docker.DockerClient,
        catalog: Catalog | None = None,
        offline: bool = True,
        progress: Progress = print,
        cache_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.catalog = catalog or Catalog.load()
        self.offline = offline
        self.progress = progress
        self.cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stackcheck"

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
            return str(image.id)
        if self.offline:
            return self._debootstrap_base(ref)
        self.progress(f"pulling base {ref}")
        try:
            return str(self.client.images.pull(ref).id)
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"cannot pull the base image {ref}: {exc.explanation or exc}",
                "without a registry, build offline: `stackcheck images build --offline`",
            ) from exc

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
        self.progress(f"creating offline base {ref} with debootstrap {base.suite} (about a minute)")
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
        self.progress(f"created offline base {ref} in {time.monotonic() - started:.1f}s")
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
                self.progress(f"{prefix} up to date   {tag}")
                continue
            self.progress(f"{prefix} building     {tag}")
            self._build_one(spec, tag, base_id)
            elapsed = time.monotonic() - started
            results.append(BuildResult(spec.name, tag, BuildStatus.BUILT, elapsed))
            self.progress(f"{prefix} built        {tag} in {elapsed:.1f}s")
        if all(r.status is BuildStatus.CACHED for r in results):
            self.progress(f"nothing to rebuild: all {len(results)} images are up to date")
        return results

    def _build_one(self, spec: ImageSpec, tag: str, base_id: str) -> None:
        if not (spec.context / "Dockerfile").is_file():
            raise ImageBuildError(
                f"image {spec.name}: no Dockerfile in {spec.context}",
                f"add {spec.context / 'Dockerfile'} or fix `context` of [image.{spec.name}] in {catalog_path()}",
            )
        with tempfile.TemporaryDirectory(prefix=f"stackcheck-ctx-{spec.name}-") as tmp:
            ctx = Path(tmp)
            for rel, path in _context_files(spec.context):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, ctx / rel)
            if spec.go:
                self._go_build(spec, ctx / "bin")
            args = {"BASE_IMAGE": self.base_image(), **engine_build_args(spec)}
            if spec.parent:
                args["PARENT_IMAGE"] = self.catalog.tag(spec.parent)
            labels = {
                f"{LABEL}.image": spec.name,
                f"{LABEL}.hash": tag.rsplit(":", 1)[1],
                f"{LABEL}.base": self.base_image(),
                f"{LABEL}.base-id": base_id,
            }
            self._docker_build(spec.name, ctx, tag, args, labels)

    def _go_build(self, spec: ImageSpec, out: Path) -> None:
        go = _go_binary()
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -trimpath"}
        env.setdefault("GOPATH", str(self.cache_dir / "gopath"))
        for prog in spec.go:
            fix = "check that the Go module proxy is reachable (GOPROXY) and the version exists"
            flags = ["-ldflags", prog.ldflags] if prog.ldflags else []
            if prog.version == "local":
                cmd = [go, "build", *flags, "-o", str(out / prog.binary), prog.package]
                _run(cmd, spec.context, env, f"go build {prog.package}", fix)
                continue
            gobin = self.cache_dir / "gobin" / hashlib.sha256(prog.key().encode()).hexdigest()[:16]
            if not (gobin / Path(prog.package).name).exists():
                _run(
                    [go, "install", *flags, f"{prog.package}@{prog.version}"],
                    None,
                    {**env, "GOBIN": str(gobin)},
                    f"go install {prog.package}@{prog.version}",
                    fix,
                )
            shutil.copy2(gobin / Path(prog.package).name, out / prog.binary)

    def _docker_build(self, name: str, ctx: Path, tag: str, args: dict[str, str], labels: dict[str, str]) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=25)
        try:
            stream = self.client.api.build(
                path=str(ctx), tag=tag, buildargs=args, labels=labels, rm=True, forcerm=True, decode=True, pull=False
            )
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
            f"run `stackcheck images build --offline --only {name}` (drop --offline where a registry is reachable)",
        ) from None
    return tag


def resolve(image: str, client: docker.DockerClient, catalog: Catalog | None = None) -> str:
    """A stack's ``image``: a catalog name (built here) or a full reference that must exist locally."""
    catalog = catalog or Catalog.load()
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
