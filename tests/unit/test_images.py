"""Content-addressed tags, dependency order and the errors users see, without an engine."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from stackcheck import images
from stackcheck.errors import ImageBuildError, ImageError, ImageMissingError

CATALOG = """
[base]
offline_tag = "stackcheck/bookworm-base:minbase"
online_image = "debian:bookworm-slim"
suite = "bookworm"
mirror = "http://deb.debian.org/debian"

[image.runtime]
context = "runtime"

[image.app]
context = "app"
parent = "runtime"
"""


@pytest.fixture
def catalog(tmp_path: Path) -> images.Catalog:
    for name in ("runtime", "app"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(f"FROM scratch\n# {name}\n")
    (tmp_path / "images.toml").write_text(CATALOG)
    return images.Catalog.load(tmp_path / "images.toml")


def test_tag_is_stable_and_never_latest(catalog: images.Catalog) -> None:
    tag = catalog.tag("app")
    assert tag == catalog.tag("app")
    assert tag.startswith("stackcheck/app:")
    assert not tag.endswith(":latest")


def test_changing_a_context_file_changes_the_tag(catalog: images.Catalog) -> None:
    before = catalog.tag("runtime")
    (catalog.images["runtime"].context / "extra.conf").write_text("x")
    assert catalog.tag("runtime") != before


def test_a_parent_change_changes_the_child_tag(catalog: images.Catalog) -> None:
    before = catalog.tag("app")
    (catalog.images["runtime"].context / "Dockerfile").write_text("FROM scratch\n# changed\n")
    assert catalog.tag("app") != before


def test_caches_do_not_count_towards_the_hash(catalog: images.Catalog) -> None:
    before = catalog.tag("runtime")
    cache = catalog.images["runtime"].context / "__pycache__"
    cache.mkdir()
    (cache / "x.pyc").write_bytes(b"\0")
    assert catalog.tag("runtime") == before
    shutil.rmtree(cache)


def test_closure_puts_parents_first(catalog: images.Catalog) -> None:
    assert [s.name for s in catalog.closure(["app"])] == ["runtime", "app"]
    assert [s.name for s in catalog.closure(["app", "runtime"])] == ["runtime", "app"]


def test_unknown_image_names_the_known_ones(catalog: images.Catalog) -> None:
    with pytest.raises(ImageMissingError, match="unknown image 'nope'") as err:
        catalog.closure(["nope"])
    assert "app, runtime" in err.value.fix


def test_malformed_catalog_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "images.toml"
    path.write_text("[base]\nofline_tag = 1\n")
    with pytest.raises(ImageError, match=r"images\.toml: \[base\.ofline_tag\] is not a known key") as err:
        images.Catalog.load(path)
    assert "offline_tag" in err.value.fix
    path.write_text("[base\n")
    with pytest.raises(ImageError, match=r"images\.toml: not valid TOML"):
        images.Catalog.load(path)
    path.write_text(CATALOG.replace('context = "app"', "context = 3"))
    with pytest.raises(ImageError, match=r"\[image\.app\.context\] must be str"):
        images.Catalog.load(path)


class FakeImages:
    def __init__(self, present: dict[str, dict[str, str]]) -> None:
        self.present = present

    def get(self, tag: str) -> Any:
        if tag not in self.present:
            raise docker.errors.ImageNotFound(tag)
        return SimpleNamespace(id=f"sha256:{tag}", labels=self.present[tag], attrs={"Size": 1e6})


class FakeClient:
    def __init__(self, present: dict[str, dict[str, str]], engine_id: str = "engine-a") -> None:
        self.images = FakeImages(present)
        self.engine_id = engine_id

    def info(self) -> dict[str, str]:
        return {"ID": self.engine_id}


def test_require_names_the_exact_build_command(catalog: images.Catalog) -> None:
    with pytest.raises(ImageMissingError) as err:
        images.require("app", FakeClient({}), catalog)  # type: ignore[arg-type]
    assert catalog.tag("app") in err.value.problem
    assert "stackcheck images build --only app" in err.value.fix


def test_second_build_with_nothing_changed_rebuilds_nothing(
    catalog: images.Catalog, tmp_path_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="stackcheck.images")
    base = "stackcheck/bookworm-base:minbase"
    labels = {"org.stackcheck.base-id": f"sha256:{base}"}
    present = {base: {}, catalog.tag("runtime"): labels, catalog.tag("app"): labels}
    builder = images.ImageBuilder(
        FakeClient(present),
        catalog,
        offline=True,
        cache_dir=tmp_path_factory.mktemp("cache"),  # type: ignore[arg-type]
    )
    results = builder.build()
    assert {r.status for r in results} == {images.BuildStatus.CACHED}
    assert caplog.messages[-1] == "nothing to rebuild: all 2 images are up to date"


def test_a_new_base_triggers_a_rebuild(
    catalog: images.Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any
) -> None:
    base = "stackcheck/bookworm-base:minbase"
    stale = {"org.stackcheck.base-id": "sha256:older-base"}
    present = {base: {}, catalog.tag("runtime"): stale, catalog.tag("app"): stale}
    built: list[str] = []
    monkeypatch.setattr(images.ImageBuilder, "_build_one", lambda self, spec, tag, base_id: built.append(spec.name))
    builder = images.ImageBuilder(
        FakeClient(present),
        catalog,
        offline=True,
        cache_dir=tmp_path_factory.mktemp("cache"),  # type: ignore[arg-type]
    )
    builder.build()
    assert built == ["runtime", "app"]


def test_missing_dockerfile_is_named(catalog: images.Catalog) -> None:
    (catalog.images["app"].context / "Dockerfile").unlink()
    builder = images.ImageBuilder(FakeClient({}), catalog)  # type: ignore[arg-type]
    with pytest.raises(ImageBuildError, match="image app: no Dockerfile"):
        builder._build_one(catalog.images["app"], catalog.tag("app"), "sha256:x")


def test_offline_base_without_debootstrap_says_how_to_get_it(
    catalog: images.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda _: None)
    builder = images.ImageBuilder(FakeClient({}), catalog, offline=True)  # type: ignore[arg-type]
    with pytest.raises(ImageBuildError, match=r"debootstrap` is not installed") as err:
        builder.ensure_base()
    assert "apt-get install -y debootstrap" in err.value.fix


def test_disk_full_gets_its_own_fix() -> None:
    assert "free disk space" in images._build_fix("write /var/lib/docker/x: no space left on device")


def test_a_failing_go_build_names_the_program_and_shows_its_output(
    catalog: images.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_go = tmp_path / "go"
    fake_go.write_text("#!/bin/sh\necho 'proxy.golang.org: 404 Not Found' >&2\nexit 1\n")
    fake_go.chmod(0o755)
    monkeypatch.setattr(images, "_go_binary", lambda: str(fake_go))
    spec = images.ImageSpec(
        "tool", catalog.images["runtime"].context, go=(images.GoProgram("example.com/tool", "v1.0.0", "tool"),)
    )
    builder = images.ImageBuilder(FakeClient({}), catalog, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    with pytest.raises(ImageBuildError, match=r"go install example.com/tool@v1.0.0 failed \(exit 1\)") as err:
        builder._go_build(spec, tmp_path / "bin")
    assert "404 Not Found" in err.value.log_tail
    assert "GOPROXY" in err.value.fix


# -- offline or online, decided per engine -------------------------------------------------------
class PullRefused(FakeImages):
    pulls = 0

    def pull(self, ref: str) -> Any:
        self.pulls += 1
        raise docker.errors.APIError("registry lookup failed")


def _builder(tmp_path: Path, catalog: images.Catalog, client: Any, offline: bool | None = None) -> images.ImageBuilder:
    return images.ImageBuilder(client, catalog, offline=offline, cache_dir=tmp_path / "cache")


def test_without_a_registry_the_offline_base_is_chosen_and_remembered(
    tmp_path: Path, catalog: images.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKCHECK_OFFLINE", raising=False)
    client = FakeClient({})
    client.images = PullRefused({})
    monkeypatch.setattr(images.ImageBuilder, "_debootstrap_base", lambda self, ref: "sha256:made-here")
    builder = _builder(tmp_path, catalog, client)
    assert builder.offline is True
    assert builder.ensure_base() == "sha256:made-here"
    assert client.images.pulls == 1
    # The next process on the same engine asks no registry: the choice was remembered.
    again = _builder(tmp_path, catalog, client)
    assert again.offline is True
    assert client.images.pulls == 1
    # Another engine decides for itself.
    other = FakeClient({"debian:bookworm-slim": {}}, engine_id="engine-b")
    assert _builder(tmp_path, catalog, other).offline is False


def test_a_present_base_decides_without_asking_a_registry(
    tmp_path: Path, catalog: images.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKCHECK_OFFLINE", raising=False)
    client = FakeClient({"stackcheck/bookworm-base:minbase": {}})
    client.images = PullRefused({"stackcheck/bookworm-base:minbase": {}})
    assert _builder(tmp_path, catalog, client).offline is True
    assert client.images.pulls == 0


def test_the_environment_or_a_flag_forces_the_mode(
    tmp_path: Path, catalog: images.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient({"stackcheck/bookworm-base:minbase": {}})
    monkeypatch.setenv("STACKCHECK_OFFLINE", "0")
    assert _builder(tmp_path, catalog, client).offline is False
    assert _builder(tmp_path, catalog, client, offline=True).offline is True


# -- a stack's own images ----------------------------------------------------------------------------
STACK = """
[stack]
name = "mine"
[networks.internal]
[images.web]
context = "web"
parent = "runtime"
args = { GREETING = "hi" }
[images.pinned]
ref = "registry.example/pinned:1.2.3"
[services.web]
image = "web"
networks = { internal = [] }
[services.cache]
image = "pinned"
networks = { internal = [] }
[services.other]
image = "runtime"
networks = { internal = [] }
"""


def _stack(tmp_path: Path, text: str = STACK) -> Any:
    from stackcheck import stackfile

    (tmp_path / "web").mkdir(exist_ok=True)
    (tmp_path / "web" / "Dockerfile").write_text("ARG PARENT_IMAGE\nFROM ${PARENT_IMAGE}\n")
    (tmp_path / "stack.toml").write_text(text)
    return stackfile.load(tmp_path / "stack.toml")


def test_a_stack_builds_its_own_images_under_its_own_name(tmp_path: Path, catalog: images.Catalog) -> None:
    spec = _stack(tmp_path)
    merged = catalog.for_stack(spec)
    assert merged.tag("web").startswith("stackcheck/mine-web:")
    assert merged.images["web"].parent == "runtime"
    assert merged.refs == {"pinned": "registry.example/pinned:1.2.3"}
    assert merged.needed(spec) == ["runtime", "ryuk", "web"]
    # Build args are part of the content hash: another value, another image.
    other = catalog.for_stack(_stack(tmp_path, STACK.replace('"hi"', '"hello"')))
    assert other.tag("web") != merged.tag("web")


def test_a_stack_image_with_an_unknown_parent_is_named(tmp_path: Path, catalog: images.Catalog) -> None:
    spec = _stack(tmp_path, STACK.replace('parent = "runtime"', 'parent = "jdk"'))
    with pytest.raises(ImageMissingError, match=r"\[images\.web\] parent 'jdk' is not a catalog image") as err:
        catalog.for_stack(spec)
    assert "app, runtime" in err.value.fix


def test_a_used_as_is_image_must_be_present_and_is_never_pulled(tmp_path: Path, catalog: images.Catalog) -> None:
    merged = catalog.for_stack(_stack(tmp_path))
    with pytest.raises(ImageMissingError, match=r"registry\.example/pinned:1\.2\.3 is not present"):
        images.resolve("pinned", FakeClient({}), merged)  # type: ignore[arg-type]
    assert images.resolve("pinned", FakeClient({"registry.example/pinned:1.2.3": {}}), merged) == (  # type: ignore[arg-type]
        "registry.example/pinned:1.2.3"
    )
