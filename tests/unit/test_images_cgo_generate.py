"""The catalog's cgo builds (`cgo_include` on a Go program), patched module builds (`patches`) and
host-side generators (`generate` on an image), as the Ollama images use them, without an engine or
a real Go toolchain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from stackcheck import images
from stackcheck.errors import ImageBuildError

CATALOG = """
[base]
offline_tag = "stackcheck/bookworm-base:minbase"
online_image = "debian:bookworm-slim"
suite = "bookworm"
mirror = "http://deb.debian.org/debian"

[image.llm]
context = "llm"
generate = "make.py"

[[image.llm.go]]
package = "example.com/native"
version = "v1.0.0"
binary = "native"
cgo_include = "include"

[[image.llm.go]]
package = "example.com/pure"
version = "v1.0.0"
binary = "pure"
"""

# Records what each `go install` saw and leaves a binary where GOBIN says.
FAKE_GO = """#!/bin/bash
pkg="${@: -1}"
name="$(basename "${pkg%@*}")"
echo "$name CGO_ENABLED=$CGO_ENABLED CGO_CPPFLAGS=${CGO_CPPFLAGS:-}" >> "$RECORD"
mkdir -p "$GOBIN" && echo binary > "$GOBIN/$name"
"""


@pytest.fixture
def catalog(tmp_path: Path) -> images.Catalog:
    context = tmp_path / "llm"
    (context / "include").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    (context / "make.py").write_text(
        "import sys, pathlib\n"
        "if len(sys.argv) != 2: sys.exit('usage')\n"
        "pathlib.Path(sys.argv[1], 'model.bin').write_text('weights')\n"
    )
    (tmp_path / "images.toml").write_text(CATALOG)
    return images.Catalog.load(tmp_path / "images.toml")


def test_the_catalog_reads_cgo_include_and_generate(catalog: images.Catalog) -> None:
    spec = catalog.images["llm"]
    assert [p.cgo_include for p in spec.go] == ["include", ""]
    assert spec.generate == "make.py"


def test_only_the_cgo_program_is_built_with_cgo_and_the_headers(
    catalog: images.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_go = tmp_path / "go"
    fake_go.write_text(FAKE_GO)
    fake_go.chmod(0o755)
    record = tmp_path / "record"
    monkeypatch.setattr(images, "_go_binary", lambda: str(fake_go))
    monkeypatch.setenv("RECORD", str(record))
    builder = images.ImageBuilder(None, catalog, offline=True, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    builder._go_build(catalog.images["llm"], tmp_path / "bin")
    include = catalog.images["llm"].context / "include"
    assert record.read_text().splitlines() == [
        f"native CGO_ENABLED=1 CGO_CPPFLAGS=-I{include}",
        "pure CGO_ENABLED=0 CGO_CPPFLAGS=",  # the cgo settings do not leak into the next program
    ]
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["native", "pure"]


def test_a_failing_cgo_build_names_the_compilers(
    catalog: images.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_go = tmp_path / "go"
    fake_go.write_text("#!/bin/sh\necho 'cgo: C compiler \"gcc\" not found' >&2\nexit 1\n")
    fake_go.chmod(0o755)
    monkeypatch.setattr(images, "_go_binary", lambda: str(fake_go))
    builder = images.ImageBuilder(None, catalog, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    with pytest.raises(ImageBuildError, match=r"go install example.com/native@v1.0.0 failed") as err:
        builder._go_build(catalog.images["llm"], tmp_path / "bin")
    assert 'C compiler "gcc" not found' in err.value.log_tail
    assert "cgo needs gcc and g++" in err.value.fix


def test_cgo_and_generate_count_in_the_tag_and_leave_other_tags_alone(catalog: images.Catalog) -> None:
    spec = catalog.images["llm"]
    pure = images.GoProgram("example.com/pure", "v1.0.0", "pure")
    assert pure.key() == "example.com/pure@v1.0.0->pure ldflags="  # as before the field existed
    assert spec.go[0].key().endswith(" cgo_include=include")
    before = catalog.tag("llm")
    catalog.images["llm"] = images.ImageSpec("llm", spec.context, go=spec.go)  # no generator
    assert catalog.tag("llm") != before


def test_the_generator_writes_into_the_build_context(
    catalog: images.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_docker_build(self: Any, name: str, ctx: Path, *args: Any) -> None:
        seen.update(name=name, files=sorted(p.name for p in ctx.iterdir()), model=(ctx / "model.bin").read_text())

    monkeypatch.setattr(images.ImageBuilder, "_docker_build", fake_docker_build)
    monkeypatch.setattr(images.ImageBuilder, "_go_build", lambda self, spec, out: None)
    builder = images.ImageBuilder(None, catalog, offline=True, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    builder._build_one(catalog.images["llm"], catalog.tag("llm"), "sha256:x")
    assert seen == {"name": "llm", "files": ["Dockerfile", "make.py", "model.bin"], "model": "weights"}
    assert not (catalog.images["llm"].context / "model.bin").exists(), "the source folder stays as it is"


def test_a_failing_generator_names_the_image_and_shows_its_output(
    catalog: images.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (catalog.images["llm"].context / "make.py").write_text("import gguf_that_is_not_installed\n")
    monkeypatch.setattr(images.ImageBuilder, "_go_build", lambda self, spec, out: None)
    builder = images.ImageBuilder(None, catalog, offline=True, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    with pytest.raises(ImageBuildError, match=r"image llm: make.py failed \(exit 1\)") as err:
        builder._build_one(catalog.images["llm"], catalog.tag("llm"), "sha256:x")
    assert "No module named 'gguf_that_is_not_installed'" in err.value.log_tail
    assert sys.executable in err.value.fix


# `go mod download -json` names a read-only source folder; `go build` records the source it built.
FAKE_GO_MODULE = """#!/bin/bash
if [ "$1" = mod ]; then echo "{\\"Dir\\": \\"$MODULE_DIR\\"}"; exit 0; fi
out="${@: -2:1}"
cat main.go > "$out"
"""


@pytest.fixture
def module_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[images.ImageBuilder, Path]:
    module = tmp_path / "modcache" / "example.com" / "server@v1.0.0"
    module.mkdir(parents=True)
    (module / "main.go").write_text("package main\n\nfunc send() { ch <- v }\n")
    for path in (module / "main.go", module):
        path.chmod(0o555)
    context = tmp_path / "server"
    (context / "patches").mkdir(parents=True)
    (context / "patches" / "fix.patch").write_text(
        "--- a/main.go\n+++ b/main.go\n@@ -1,3 +1,3 @@\n package main\n \n-func send() { ch <- v }\n"
        "+func send() { sendStreamValue(ctx, ch, v) }\n"
    )
    fake_go = tmp_path / "go"
    fake_go.write_text(FAKE_GO_MODULE)
    fake_go.chmod(0o755)
    monkeypatch.setattr(images, "_go_binary", lambda: str(fake_go))
    monkeypatch.setenv("MODULE_DIR", str(module))
    return images.ImageBuilder(None, images.Catalog.load(), offline=True, cache_dir=tmp_path / "cache"), context  # type: ignore[arg-type]


def test_a_patched_program_is_built_from_a_patched_copy_of_its_module(
    module_build: tuple[images.ImageBuilder, Path], tmp_path: Path
) -> None:
    builder, context = module_build
    program = images.GoProgram("example.com/server", "v1.0.0", "server", patches=("patches/fix.patch",))
    builder._go_build(images.ImageSpec("server", context, go=(program,)), tmp_path / "bin")
    assert "sendStreamValue(ctx, ch, v)" in (tmp_path / "bin" / "server").read_text()
    module = tmp_path / "modcache" / "example.com" / "server@v1.0.0"
    assert "ch <- v" in (module / "main.go").read_text(), "the module cache is left as it is"
    assert program.key().endswith(" patches=patches/fix.patch")


def test_a_patch_that_no_longer_applies_names_the_patch_and_the_version(
    module_build: tuple[images.ImageBuilder, Path], tmp_path: Path
) -> None:
    builder, context = module_build
    (context / "patches" / "fix.patch").write_text(
        "--- a/main.go\n+++ b/main.go\n@@ -1,3 +1,3 @@\n package main\n \n-func other() {}\n+func other() { }\n"
    )
    program = images.GoProgram("example.com/server", "v1.0.0", "server", patches=("patches/fix.patch",))
    with pytest.raises(ImageBuildError, match=r"applying patches/fix.patch to example.com/server@v1.0.0 failed") as err:
        builder._go_build(images.ImageSpec("server", context, go=(program,)), tmp_path / "bin")
    assert "rewrite patches/fix.patch for v1.0.0" in err.value.fix
    assert "FAILED" in err.value.log_tail
    assert not (tmp_path / "bin" / "server").exists()


def test_the_shipped_ollama_images_are_pinned_cgo_and_generated() -> None:
    catalog = images.Catalog.load()
    (program,) = catalog.images["ollama"].go
    assert (program.package, program.version) == ("github.com/ollama/ollama", "v0.17.4")
    assert "version.Version=0.17.4" in program.ldflags
    assert program.patches == ("patches/stream-send-watches-the-request.patch",)
    assert all((catalog.images["ollama"].context / rel).is_file() for rel in program.patches)
    headers = catalog.images["ollama"].context / program.cgo_include
    assert {p.relative_to(headers).as_posix() for p in headers.rglob("*.h*")} == {
        "nlohmann/json.hpp",
        "nlohmann/json_fwd.hpp",
        "stb/stb_image.h",
        "miniaudio/miniaudio.h",
    }
    tiny = catalog.images["ollama-tiny"]
    assert (tiny.parent, tiny.generate) == ("ollama", "make_model.py")
    assert (tiny.context / tiny.generate).is_file()
