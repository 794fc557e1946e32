"""Comprehensive health check (design doc 000, HealthCheckService): concurrent, bounded checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
# Checks run in their own small pool so a burst of health probes cannot starve request threads;
# a hung check occupies a thread only until its own socket/deadline timeout fires.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")

Probe = Callable[[], tuple[str, Any]]  # returns (status, details); raising means unhealthy


async def run_check(name: str, probe: Probe, timeout_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        status, details = await asyncio.wait_for(loop.run_in_executor(_executor, probe), timeout_s)
    except TimeoutError:
        status, details = UNHEALTHY, f"timed out after {timeout_s:g}s"
    except Exception as exc:  # the probe's failure is the check's result
        status, details = UNHEALTHY, describe_error(exc)
    return {
        "name": name,
        "status": status,
        "response_time_ms": round((time.perf_counter() - start) * 1000, 1),
        "details": details,
    }


def describe_error(exc: BaseException) -> str:
    # First line only, bounded: enough to diagnose, no stack trace, no multi-line server dumps.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def overall(checks: list[dict[str, Any]]) -> tuple[str, int]:
    """The database is essential (unhealthy -> 503); everything else only degrades the service,
    e.g. without Redis requests still work from the database."""
    by_name = {c["name"]: c["status"] for c in checks}
    if by_name.get("database") != HEALTHY:
        return UNHEALTHY, 503
    if any(status != HEALTHY for status in by_name.values()):
        return DEGRADED, 200
    return HEALTHY, 200


async def comprehensive(
    probes: dict[str, Probe | None], timeout_s: float, static: dict[str, tuple[str, Any]] | None = None
) -> tuple[dict[str, Any], int]:
    """probes: name -> probe. static: name -> fixed (status, details) for checks not configured."""
    names = list(probes)
    results = await asyncio.gather(*(run_check(n, p, timeout_s) for n, p in probes.items() if p is not None))
    checks = list(results)
    for name, (status, details) in (static or {}).items():
        checks.append({"name": name, "status": status, "response_time_ms": 0.0, "details": details})
    order = {n: i for i, n in enumerate(names + list(static or {}))}
    checks.sort(key=lambda c: order.get(c["name"], 99))
    status, code = overall(checks)
    return {"status": status, "timestamp": time.time(), "checks": checks}, code


class SingleFlight(Generic[T]):
    """Concurrent callers share one in-flight run. A burst of health probes (a load balancer, a
    monitoring fan-out) then checks the dependencies once per round, not once per probe: one
    check per probe exhausts the pool and the health pool's threads and reports the burst itself
    as a database outage. Nothing is cached: a caller arriving after a run finished starts a new one."""

    def __init__(self) -> None:
        self._running: asyncio.Future[T] | None = None

    async def run(self, start: Callable[[], Awaitable[T]]) -> T:
        if self._running is None:
            running = asyncio.ensure_future(start())
            self._running = running
            running.add_done_callback(lambda _: setattr(self, "_running", None))
        # shield: a caller that disconnects does not cancel the run the others wait for
        return await asyncio.shield(self._running)
