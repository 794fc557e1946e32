"""What a stack run left in the engine, always read fresh from the engine by the run's label.

Volumes carry no run label when an image declares them (anonymous volumes), so a ``RunWatch``
records every volume the run's containers mount while the run is alive; after teardown each of
those must be gone too. (The reference stack's images declare none today: the check guards
stacks that do.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import docker
import docker.errors

from stackcheck import stackfile
from stackcheck.background import BackgroundLoop
from stackcheck.stack import DEFAULT_STACK, RUN_LABEL


@dataclass(frozen=True)
class Leftovers:
    containers: list[str]
    networks: list[str]
    volumes: list[str]

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)


@dataclass(frozen=True)
class ContainerState:
    name: str
    status: str  # created, running, exited, ...
    volumes: tuple[str, ...]


def run_ids(client: docker.DockerClient) -> set[str]:
    """Run ids of every stackcheck container and network in the engine now."""
    labels = [c["Labels"] for c in client.api.containers(all=True, filters={"label": RUN_LABEL})]
    labels += [n["Labels"] for n in client.api.networks(filters={"label": RUN_LABEL})]
    return {str(lab[RUN_LABEL]) for lab in labels}


def containers(client: docker.DockerClient, run_id: str) -> list[ContainerState]:
    """The run's containers from one list call (no inspect per container: one may vanish meanwhile)."""
    return [
        ContainerState(
            c["Names"][0].lstrip("/"),
            c["State"],
            tuple(m["Name"] for m in c.get("Mounts") or [] if m["Type"] == "volume"),
        )
        for c in client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    ]


def mounted_volumes(client: docker.DockerClient, run_id: str) -> set[str]:
    """Volumes mounted by the run's containers now, plus volumes carrying the run's label."""
    names = {v for c in containers(client, run_id) for v in c.volumes}
    return names | {v.name for v in client.volumes.list(filters={"label": f"{RUN_LABEL}={run_id}"})}


def leftovers(client: docker.DockerClient, run_id: str, volumes: Iterable[str] = ()) -> Leftovers:
    label = {"label": f"{RUN_LABEL}={run_id}"}
    still = []
    for name in sorted(set(volumes) | mounted_volumes(client, run_id)):
        try:
            client.volumes.get(name)
            still.append(name)
        except docker.errors.NotFound:
            pass
    return Leftovers(
        [c.name for c in containers(client, run_id)], [n["Name"] for n in client.api.networks(filters=label)], still
    )


def wait_gone(client: docker.DockerClient, run_id: str, volumes: Iterable[str], within_s: float) -> Leftovers:
    """Poll until nothing of the run is left or ``within_s`` passed; returns what is left."""
    deadline = time.monotonic() + within_s
    while True:
        left = leftovers(client, run_id, volumes)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@dataclass
class RunWatch(BackgroundLoop):
    """Every 0.2 s while the block runs: which runs not in ``before`` appeared, and the volumes
    their containers mount (a run id is only known once its first container or network exists)."""

    client: docker.DockerClient
    before: set[str]
    volumes: dict[str, set[str]] = field(default_factory=dict)

    def new_runs(self) -> list[str]:
        return sorted(self.volumes)

    def tick(self) -> None:
        for run_id in run_ids(self.client) - self.before:
            self.volumes.setdefault(run_id, set()).update(mounted_volumes(self.client, run_id))


def reference_containers() -> int:
    """How many containers the reference stack runs: from its stack file, not a count kept by hand."""
    return sum(len(svc.instances()) for svc in stackfile.load(DEFAULT_STACK).services.values())
