"""A stack's own images: `[images.NAME]` in the stack file is built by stackcheck (content-hashed
tag under the stack's name, the catalog image as parent, build args applied) and booted; until it
is built, booting it is one clear error that names the build command. State is read from the
engine, never from the builder's own account."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import docker
import httpx
import pytest

from stackcheck import images, stackfile
from stackcheck.errors import ImageMissingError, StackError
from stackcheck.stack import RUN_LABEL, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow]
STACK = Path(__file__).parent / "data" / "own-image" / "stack.toml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_a_stack_image_is_built_then_booted(docker_client: docker.DockerClient) -> None:
    catalog = images.Catalog.load().for_stack(stackfile.load(STACK))
    tag = catalog.tag("hello")
    assert tag.startswith("stackcheck/ownimage-hello:")
    built = cli("images", "build", "--stack", str(STACK))
    assert built.returncode == 0, built.stderr
    image = docker_client.images.get(tag)  # fresh from the engine
    assert image.labels["org.stackcheck.image"] == "hello"
    listed = cli("images", "list", "--stack", str(STACK))
    assert "hello            present" in listed.stdout, listed.stdout
    with Stack.from_file(STACK) as stack:
        container = stack.service("hello").docker
        container.reload()
        assert container.image.id == image.id
        body = httpx.get(stack.url("hello", 8000) + "/index.html", timeout=5).text
    assert body == "bonjour from a stack image\n"  # the stack file's build arg, not the Dockerfile's default


def test_an_unbuilt_stack_image_is_one_clear_error(tmp_path: Path) -> None:
    context = tmp_path / "hello"
    context.mkdir()
    (context / "Dockerfile").write_text((STACK.parent / "hello" / "Dockerfile").read_text() + "# never built\n")
    (tmp_path / "stack.toml").write_text(STACK.read_text())
    with pytest.raises(ImageMissingError) as err, Stack.from_file(tmp_path / "stack.toml"):
        pass
    assert "stackcheck/ownimage-hello:" in err.value.problem
    assert "--stack FILE" in err.value.fix


def test_gpu_optional_falls_back_to_cpu_and_required_refuses_to_boot(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """No GPU on this engine (read from `docker info` here too): optional boots on CPU and says so."""
    has_gpu = any("nvidia" in name for name in docker_client.info().get("Runtimes", {}))
    if has_gpu:
        pytest.skip("this engine has an NVIDIA runtime: the CPU fallback cannot be shown here")
    shutil.copytree(STACK.parent, tmp_path, dirs_exist_ok=True)
    text = STACK.read_text().replace('cap_drop = ["ALL"]', 'cap_drop = ["ALL"]\ngpu = "optional"')
    (tmp_path / "stack.toml").write_text(text)
    with Stack.from_file(tmp_path / "stack.toml") as stack:
        container = stack.service("hello").docker
        container.reload()
        assert not container.attrs["HostConfig"].get("DeviceRequests")
        assert stack.devices["hello"].device.value == "cpu"
        assert "hello: CPU" in stack.describe() or "no NVIDIA runtime" in stack.describe()
    (tmp_path / "stack.toml").write_text(text.replace('gpu = "optional"', 'gpu = "required"'))
    required = Stack.from_file(tmp_path / "stack.toml")
    with pytest.raises(StackError, match='gpu = "required" but the Docker engine has no GPU'), required:
        pass
    assert not docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={required.run_id}"})
