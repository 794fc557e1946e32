"""Named volumes of a stack file (``[volumes.NAME]``, a service's ``volumes = ["NAME:/path"]``)
and one-off jobs on them.

Each run gets its own volumes, ``RUN_ID-NAME``, labelled like the run's containers and networks
(run id, stack, and the testcontainers session unless the stack is kept), so ``Stack.stop``,
``stackcheck down RUN_ID``, ``down --all`` and the reaper remove them. A volume can be handed on:
``Stack.stop(keep_volumes=["backups"])`` leaves it, and ``Stack(spec, volumes={"backups": NAME})``
mounts that volume instead of a new one and removes it when it stops (a restore onto a fresh
server that only the backups survived).

A job (``run_job``) is a container of a service's image with that service's volumes, user and
environment, no network, labelled with the run: what ``docker compose run`` is for maintenance
(a restore while the service is stopped). It is removed when it ends, or with the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import docker
import docker.errors

from stackcheck import engine
from stackcheck.errors import StackError

if TYPE_CHECKING:  # stack imports this module
    from stackcheck.stack import Stack

VOLUME_LABEL = "org.stackcheck.volume"  # the volume's name in the stack file
JOB_TIMEOUT_S = 120.0


def volume_name(run_id: str, name: str) -> str:
    return f"{run_id}-{name}"


def create_volumes(
    client: docker.DockerClient, run_id: str, names: Collection[str], labels: Mapping[str, str],
    adopted: Mapping[str, str],
) -> dict[str, str]:  # fmt: skip
    """The run's volumes, stack-file name -> engine name: new ones created, adopted ones checked."""
    unknown = sorted(set(adopted) - set(names))
    if unknown:
        raise StackError(
            f"volumes handed to the stack are not in its stack file: {', '.join(unknown)}",
            f"use one of: {', '.join(names) or '(none: add [volumes.NAME])'}",
        )
    out: dict[str, str] = {}
    for name in names:
        if name in adopted:
            try:
                client.volumes.get(adopted[name])
            except docker.errors.NotFound:
                raise StackError(
                    f"volume {adopted[name]!r} handed to this stack as {name!r} does not exist",
                    "keep it when the earlier stack stops: stack.stop(keep_volumes=[...])",
                ) from None
            out[name] = adopted[name]
            continue
        out[name] = client.volumes.create(volume_name(run_id, name), labels={**labels, VOLUME_LABEL: name}).name
    return out


def remove_volumes(client: docker.DockerClient, names: Collection[str]) -> None:
    """Remove volumes by engine name (containers using them must be gone); missing ones are fine."""
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(name).remove(force=True)


@dataclass(frozen=True)
class JobResult:
    command: tuple[str, ...]
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_job(stack: Stack, service: str, command: Sequence[str], timeout_s: float = JOB_TIMEOUT_S) -> JobResult:
    """Run ``command`` in a one-off container of ``service``'s image, with its volumes, user and
    environment and no network; wait for it to end and remove it."""
    svc = stack.spec.services[service]
    client = engine.client()
    try:
        binds = {stack.volume(m.volume): {"bind": m.path, "mode": "ro" if m.read_only else "rw"} for m in svc.volumes}
        container = client.containers.create(
            stack.service(service).container.image,
            list(command),
            environment=stack._rendered_env(service),
            volumes=binds,
            user=svc.user,
            network_mode="none",
            read_only=svc.read_only,
            tmpfs={path: "" for path in svc.tmpfs},
            labels=stack.labels(**{"org.stackcheck.job": service}),
        )
        try:
            container.start()
            try:
                code = int(container.wait(timeout=timeout_s)["StatusCode"])
            except Exception as exc:  # the engine's read timeout
                raise StackError(
                    f"job {' '.join(command)} in {service}'s image did not end within {timeout_s:.0f}s ({exc})",
                    "read its output: docker logs",
                ) from exc
            output = container.logs().decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    finally:
        client.close()
    return JobResult(tuple(command), code, output)
