"""Prometheus metrics of design doc 002 (chatbot_* names), shared by every uvicorn worker
(prometheus_client multiprocess mode), plus gauges read from the database at scrape time: the
stored conversations and doc 002's chatbot_active_sessions."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Protocol

# prometheus_client picks its value backend at import time: the directory must be in the
# environment before the import below. One per uvicorn master (the workers' parent), under /tmp
# because the root filesystem is read-only.
_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"chatbot-metrics-{os.getppid()}"
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
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

REQUESTS = Counter("chatbot_requests_total", "Total requests", ["method", "endpoint", "status"])
DURATION = Histogram(
    "chatbot_request_duration_seconds",
    "Request duration",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CONVERSATIONS = Counter("chatbot_conversations_total", "Conversations created")
MESSAGES = Counter("chatbot_messages_total", "Total messages processed", ["role", "model"])
TOKENS = Counter("chatbot_tokens_total", "Total tokens used", ["model", "type"])
LLM_REQUESTS = Counter("chatbot_llm_requests_total", "Chat completion calls to the LLM", ["result"])


# The API has no login session: doc 002's "active session" is a conversation written in within
# this window (the dashboard's own rate window).
ACTIVE_WINDOW_S = 300.0


class Counts(Protocol):
    def count_conversations(self) -> int: ...

    def count_active_conversations(self, since: float) -> int: ...


class DatabaseGauges:
    """Gauges computed from the database at each scrape (the same in every worker)."""

    def __init__(self, db: Counts) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stored = self.db.count_conversations()
            active = self.db.count_active_conversations(time.time() - ACTIVE_WINDOW_S)
        except Exception:  # a scrape must not fail because the database does: the gauges are absent
            return
        yield GaugeMetricFamily("chatbot_conversations_stored", "Conversations in the database", value=stored)
        yield GaugeMetricFamily(
            "chatbot_active_sessions", "Conversations with a message in the last 5 minutes", value=active
        )


def render(db: Counts) -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(DatabaseGauges(db))  # type: ignore[arg-type]
    return generate_latest(registry)


class MetricsMiddleware:
    """Pure ASGI (no body buffering). The endpoint label is the matched route template, so ids in
    paths and random 404s cannot explode the series count."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope.get("method", "")
            if method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}:
                method = "OTHER"
            REQUESTS.labels(method, endpoint, str(status)).inc()
            DURATION.labels(method, endpoint).observe(time.perf_counter() - started)


__all__ = ["CONTENT_TYPE_LATEST", "CONVERSATIONS", "LLM_REQUESTS", "MESSAGES", "TOKENS", "MetricsMiddleware", "render"]
