"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from stackcheck.stack import remove_runs
from tests.integration.leftovers import RunWatch, run_ids


@pytest.fixture
def watch(docker_client: docker.DockerClient) -> Iterator[RunWatch]:
    """Runs that appear during the test (a child process's stacks); anything of theirs left is removed afterwards."""
    with RunWatch(docker_client, run_ids(docker_client)) as watching:
        yield watching
    for run_id in watching.new_runs():
        remove_runs(docker_client, run_id)
