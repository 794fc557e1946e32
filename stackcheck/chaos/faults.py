"""Faults: each one is a context manager that records its window in a journal and is reverted
on exit, whatever ended the block (an assertion, an exception, Ctrl-C).

Network faults act on a named link through Toxiproxy; container faults act through the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stackcheck.chaos.journal import EventKind, Journal
from stackcheck.errors import StackError
from stackcheck.stack import LinkHandle, ServiceHandle, Stack
from stackcheck.toxiproxy import Stream
from stackcheck.waiting import wait_until

_names = itertools.count(1)


@contextlib.contextmanager
def _window(journal: Journal | None, name: str, detail: str) -> Iterator[None]:
    if journal is not None:
        journal.record(EventKind.FAULT_START, name, detail)
    try:
        yield
    finally:
        if journal is not None:
            journal.record(EventKind.FAULT_END, name, detail)


# -- network (Toxiproxy) ------------------------------------------------------------------------


@dataclass
class Toxic:
    """One Toxiproxy toxic on a link, removed on exit."""

    link: LinkHandle
    kind: str
    attributes: dict[str, Any]
    stream: Stream = Stream.DOWNSTREAM
    toxicity: float = 1.0
    journal: Journal | None = None

    def __post_init__(self) -> None:
        self.name = f"stackcheck-{self.kind}-{next(_names)}"

    @property
    def label(self) -> str:
        return f"{self.kind} on {self.link.name} ({self.stream.value})"

    def __enter__(self) -> Toxic:
        if self.journal is not None:
            self.journal.record(EventKind.FAULT_START, self.label, str(self.attributes))
        try:
            self.link.toxiproxy.add_toxic(
                self.link.name, self.name, self.kind, self.attributes, self.stream, self.toxicity
            )
        except BaseException:
            self._end()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.link.toxiproxy.remove_toxic(self.link.name, self.name)
        finally:
            self._end()

    def _end(self) -> None:
        if self.journal is not None:
            self.journal.record(EventKind.FAULT_END, self.label, str(self.attributes))


# Every toxic takes the same keyword-only options: stream (downstream by default), toxicity
# (the fraction of connections affected) and journal.


def latency(
    link: LinkHandle,
    ms: int,
    jitter_ms: int = 0,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    return Toxic(link, "latency", {"latency": ms, "jitter": jitter_ms}, stream, toxicity, journal)


def bandwidth(
    link: LinkHandle,
    kb_per_s: int,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    return Toxic(link, "bandwidth", {"rate": kb_per_s}, stream, toxicity, journal)


def slow_close(
    link: LinkHandle,
    delay_ms: int,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    return Toxic(link, "slow_close", {"delay": delay_ms}, stream, toxicity, journal)


def timeout(
    link: LinkHandle,
    ms: int = 0,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    """Stop all data; close after ``ms`` (0: hang until the fault ends)."""
    return Toxic(link, "timeout", {"timeout": ms}, stream, toxicity, journal)


def reset_peer(
    link: LinkHandle,
    after_ms: int = 0,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    return Toxic(link, "reset_peer", {"timeout": after_ms}, stream, toxicity, journal)


def slicer(
    link: LinkHandle,
    average_size: int = 64,
    size_variation: int = 32,
    delay_us: int = 100,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    attributes = {"average_size": average_size, "size_variation": size_variation, "delay": delay_us}
    return Toxic(link, "slicer", attributes, stream, toxicity, journal)


def limit_data(
    link: LinkHandle,
    bytes_: int,
    *,
    stream: Stream = Stream.DOWNSTREAM,
    toxicity: float = 1.0,
    journal: Journal | None = None,
) -> Toxic:
    return Toxic(link, "limit_data", {"bytes": bytes_}, stream, toxicity, journal)


@contextlib.contextmanager
def link_down(link: LinkHandle, *, journal: Journal | None = None) -> Iterator[None]:
    """The link refuses connections (existing ones are closed) until the block ends."""
    with _window(journal, f"link down {link.name}", "refused"), link.down():
        yield


# -- containers ---------------------------------------------------------------------------------


def health(handle: ServiceHandle) -> str:
    """The container's state re-read from the engine (``attrs`` alone is a cached copy): ``healthy``
    when it runs and its healthcheck (if any) passes, else what it is (``exited``, ``unhealthy``, ...).
    Right after a (re)start the image's check is run at once, not one Docker interval later."""
    return handle.health()


def not_healthy(handles: list[ServiceHandle]) -> str | None:
    """A verify check: None when every container is healthy right now, else which are not."""
    bad = [f"{h.name} is {status}" for h in handles if (status := health(h)) != "healthy"]
    return ", ".join(bad) or None


def await_healthy(handle: ServiceHandle, timeout_s: float = 60.0) -> float:
    """Wait until the container runs and (if it has a healthcheck) is healthy; return seconds waited."""
    started = time.monotonic()
    if wait_until(lambda: True if health(handle) == "healthy" else None, timeout_s, interval_s=0.1):
        return time.monotonic() - started
    raise StackError(
        f"{handle.name} did not become healthy within {timeout_s:.0f}s", f"read its logs:\n{handle.logs(20)}"
    )


@contextlib.contextmanager
def kill(
    handle: ServiceHandle, *, journal: Journal | None = None, signal: str = "SIGKILL", restart: bool = True
) -> Iterator[None]:
    """Crash the container; on exit start it again (``restart=False`` leaves it dead, for failovers)."""
    with _window(journal, f"{signal} {handle.name}", ""):
        handle.docker.kill(signal=signal)
        try:
            yield
        finally:
            if restart:
                handle.docker.start()
    if restart:
        await_healthy(handle)


@contextlib.contextmanager
def stop(handle: ServiceHandle, *, journal: Journal | None = None, grace_s: int = 10) -> Iterator[None]:
    with _window(journal, f"stop {handle.name}", f"grace {grace_s}s"):
        handle.docker.stop(timeout=grace_s)
        try:
            yield
        finally:
            handle.docker.start()
    await_healthy(handle)


@contextlib.contextmanager
def pause(handle: ServiceHandle, *, journal: Journal | None = None) -> Iterator[None]:
    """Freeze every process of the container (a hang: connections stay open, nothing answers)."""
    with _window(journal, f"pause {handle.name}", ""):
        handle.docker.pause()
        try:
            yield
        finally:
            handle.docker.unpause()


def restart(handle: ServiceHandle, *, journal: Journal | None = None, timeout_s: int = 10) -> float:
    """Restart and wait for health: returns the seconds until healthy again."""
    with _window(journal, f"restart {handle.name}", ""):
        handle.docker.restart(timeout=timeout_s)
        return await_healthy(handle)


def network_aliases(stack: Stack, handle: ServiceHandle, network: str) -> list[str]:
    """The DNS names the container has on one of the stack's networks (without Docker's own id alias)."""
    handle.docker.reload()
    endpoint = handle.docker.attrs["NetworkSettings"]["Networks"].get(stack.network_name(network))
    if endpoint is None:
        raise StackError(
            f"{handle.name} is not on network {network}", f"use one of: {', '.join(handle.service.networks)}"
        )
    return [a for a in endpoint.get("Aliases") or [] if not handle.docker.id.startswith(a)]


@contextlib.contextmanager
def disconnect(stack: Stack, handle: ServiceHandle, network: str, *, journal: Journal | None = None) -> Iterator[None]:
    """Take the container off one of the stack's networks; reconnect it with its aliases on exit."""
    aliases = network_aliases(stack, handle, network)
    net = stack.docker_network(network)
    with _window(journal, f"disconnect {handle.name} from {network}", ""):
        net.disconnect(handle.docker, force=True)
        try:
            yield
        finally:
            net.connect(handle.docker, aliases=aliases)


@contextlib.contextmanager
def partition(
    stack: Stack, group: list[ServiceHandle], network: str, *, journal: Journal | None = None
) -> Iterator[None]:
    """Cut a group of containers off a network shared with the rest of the stack."""
    with contextlib.ExitStack() as cuts:
        for handle in group:
            cuts.enter_context(disconnect(stack, handle, network, journal=journal))
        yield
