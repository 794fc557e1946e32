"""Ollama's weak spots (design doc 000) are each caught on a broken container of the real
ollama-tiny image, and its careful twin passes: OLLAMA_ORIGINS=* (ollama-origins), an unpinned
image reference (ollama-image-pinned), the API published beyond loopback
(containers-no-public-data-ports: 11434) and running as root (containers-non-root).

The first three rules read the container's configuration, so created, never started containers
prove them (no port is ever opened beyond loopback); root is judged on running processes.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_ollama_compliance.py
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from stackcheck.compliance import runner
from stackcheck.compliance.model import Outcome, Policy
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import RUN_LABEL, ServiceHandle
from stackcheck.stackfile import ServiceSpec
from stackcheck.target import HttpTarget
from tests.unit.compliance_fakes import FakeStack

pytestmark = [pytest.mark.docker, pytest.mark.compliance]

POLICY = Policy.load()
UNPINNED = "stackcheck-test/ollama-tiny:latest"


@dataclass
class Wrapped:
    container: docker.models.containers.Container

    def get_wrapped_container(self) -> docker.models.containers.Container:
        return self.container


@contextmanager
def containers(
    client: docker.DockerClient, image: str, twins: dict[str, dict[str, Any]], start: bool = False
) -> Iterator[list[ServiceHandle]]:
    """One container of ``image`` per name with its create options; removed on exit, whatever happens."""
    made: list[docker.models.containers.Container] = []
    labels = {RUN_LABEL: f"test-ollama-compliance-{os.getpid()}"}  # `stackcheck down --all` finds them
    try:
        for options in twins.values():
            made.append(client.containers.create(image, labels=labels, **options))
            if start:
                made[-1].start()
        spec = ServiceSpec("ollama", "ollama-tiny", {})
        yield [ServiceHandle(name, spec, Wrapped(c)) for name, c in zip(twins, made, strict=True)]  # type: ignore[arg-type]
    finally:
        for container in made:
            container.remove(force=True, v=True)


def judge(rule_id: str, handles: list[ServiceHandle]) -> list[tuple[str, Outcome, str]]:
    ctx = CheckContext(HttpTarget("http://127.0.0.1:9", booted=True), FakeStack(handles), POLICY)  # type: ignore[arg-type]
    return [(r.subject, r.outcome, r.evidence) for r in runner.evaluate(POLICY.rules[rule_id], ctx)]


@pytest.fixture
def tiny(docker_client: docker.DockerClient, image: Callable[[str], str]) -> str:
    return image("ollama-tiny")


def test_ollama_origins_star_fails(docker_client: docker.DockerClient, tiny: str) -> None:
    twins = {"careless": {"environment": {"OLLAMA_ORIGINS": "*"}}, "careful": {}}
    with containers(docker_client, tiny, twins) as handles:
        found = judge("ollama-origins", handles)
    assert found == [
        ("careless", Outcome.FAIL, "OLLAMA_ORIGINS=*: * lets any web page call the model API"),
        ("careful", Outcome.PASS, "OLLAMA_ORIGINS unset: Ollama allows local origins only"),
    ]


def test_an_unpinned_image_reference_fails(docker_client: docker.DockerClient, tiny: str) -> None:
    """The same image under a mutable `latest` tag (what `ollama/ollama:latest` is) fails; under
    the content-hash tag stackcheck built it with, it passes."""
    repository, tag = UNPINNED.rsplit(":", 1)
    docker_client.images.get(tiny).tag(repository, tag)
    try:
        with containers(docker_client, UNPINNED, {"careless": {}}) as careless:
            unpinned = judge("ollama-image-pinned", careless)
    finally:
        docker_client.images.remove(UNPINNED)  # the tag only: the image keeps its hash tag
    with containers(docker_client, tiny, {"careful": {}}) as careful:
        hashed = judge("ollama-image-pinned", careful)
    assert unpinned == [
        (
            "careless",
            Outcome.FAIL,
            f"image {UNPINNED} is not pinned: a mutable tag can be replaced under the same name "
            "(reference it by digest, NAME@sha256:..., or let stackcheck build it: a content-hash tag)",
        )
    ]
    assert hashed == [("careful", Outcome.PASS, f"image {tiny} (pinned)")]


def test_the_api_published_beyond_loopback_fails(docker_client: docker.DockerClient, tiny: str) -> None:
    twins = {
        "careless": {"ports": {"11434/tcp": ("0.0.0.0", None)}},
        "careful": {"ports": {"11434/tcp": ("127.0.0.1", None)}},
    }
    with containers(docker_client, tiny, twins) as handles:
        found = judge("containers-no-public-data-ports", handles)
    assert found == [
        ("careless", Outcome.FAIL, "data port published beyond loopback: 11434/tcp on 0.0.0.0:*"),
        ("careful", Outcome.PASS, "data ports only on loopback (or unpublished)"),
    ]


def test_ollama_as_root_fails(docker_client: docker.DockerClient, tiny: str) -> None:
    twins = {"careless": {"user": "0:0"}, "careful": {}}
    with containers(docker_client, tiny, twins, start=True) as handles:
        found = judge("containers-non-root", handles)
    assert found == [
        ("careless", Outcome.FAIL, "configured user is root (0:0); user '0:0', process uids [0]"),
        ("careful", Outcome.PASS, "user '10010:10010', process uids [10010]"),
    ]
