"""Prometheus metrics shared by all uvicorn workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

# prometheus_client picks its value backend at import time, so the directory must be in the
# environment before the import below. Default: per uvicorn master (the workers' parent), under
# /tmp because the root filesystem is read-only.
_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"promptcard-metrics-{os.getppid()}"
)
os.makedirs(_dir, mode=0o700, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CACHE_OPS = Counter("promptcard_cache_operations_total", "Redis cache operations", ["op", "result"])
DB_UNAVAILABLE = Counter("promptcard_database_unavailable_total", "Requests answered 503 because of the database")
LLM_CALLS = Counter("promptcard_llm_requests_total", "LLM generate calls", ["result"])


def render() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so it neither buffers bodies nor breaks cancellation.
    Labels use the matched route template; unmatched paths share one label so random 404s cannot
    explode the series count."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            if method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}:
                method = "OTHER"
            labels = {"method": method, "route": template, "status": str(status)}
            REQUESTS.labels(**labels).inc()
            LATENCY.labels(**labels).observe(time.perf_counter() - start)


__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "render"]
