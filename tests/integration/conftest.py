"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import docker
import pytest

from stackcheck import images
from stackcheck.stack import remove_runs
from stackcheck.stackfile import StackSpec
from tests.integration.leftovers import RunWatch, run_ids


@pytest.fixture
def watch(docker_client: docker.DockerClient) -> Iterator[RunWatch]:
    """Runs that appear during the test (a child process's stacks); anything of theirs left is removed afterwards."""
    with RunWatch(docker_client, run_ids(docker_client)) as watching:
        yield watching
    for run_id in watching.new_runs():
        remove_runs(docker_client, run_id)


@pytest.fixture(scope="session")
def own_images(docker_client: docker.DockerClient) -> Callable[[StackSpec], None]:
    """Builds what a stack file needs, its own images (``[images.NAME]``) included, as `stackcheck
    images build --stack FILE` does: ``Stack`` refuses a missing image with one ImageMissingError
    and the CLI builds it, so a module that boots a stack file builds first, whatever ran before."""

    def build(spec: StackSpec) -> None:
        catalog = images.Catalog.load().for_stack(spec)
        images.ImageBuilder(docker_client, catalog).build(only=catalog.needed(spec))

    return build
