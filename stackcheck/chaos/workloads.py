"""Workloads that run during experiments: background traffic with per-request samples (errors
over time, latency before/during/after a fault) and ledger writes through the API."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from stackcheck.stack import Stack

Request = Callable[[httpx.Client, int], httpx.Response]  # issues request number n


@dataclass(frozen=True)
class Sample:
    started: float  # monotonic
    latency: float  # seconds
    status: int  # 0: no HTTP answer (connection error or timeout)


@dataclass(frozen=True)
class Window:
    count: int
    statuses: dict[int, int]
    p50_ms: float | None
    p95_ms: float | None

    def describe(self) -> str:
        if not self.count:
            return "no requests"
        statuses = dict(sorted(self.statuses.items()))
        return f"{self.count} requests, p50 {_ms(self.p50_ms)}, p95 {_ms(self.p95_ms)}, statuses {statuses}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000


@dataclass
class Traffic:
    """``concurrency`` closed-loop clients issuing ``request`` until the block ends (bounded by ``max_s``)."""

    stack: Stack
    request: Request
    concurrency: int = 4
    max_s: float = 120.0
    timeout_s: float = 10.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client_loop(self, worker: int) -> None:
        deadline = time.monotonic() + self.max_s
        headers = self.stack.synthetic_headers()
        with self.stack.http(timeout=self.timeout_s, headers=headers) as client:
            n = worker
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status = self.request(client, n).status_code
                except httpx.HTTPError:
                    status = 0
                with self._lock:
                    self.samples.append(Sample(started, time.monotonic() - started, status))
                n += self.concurrency

    def __enter__(self) -> Traffic:
        self._threads = [
            threading.Thread(target=self._client_loop, args=(i,), daemon=True) for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def window(self, start: float = 0.0, end: float = math.inf) -> Window:
        with self._lock:
            chosen = [s for s in self.samples if start <= s.started < end]
        statuses = Counter(s.status for s in chosen)
        ok = [s.latency for s in chosen if 200 <= s.status < 400]
        return Window(len(chosen), dict(statuses), _pct(ok, 50), _pct(ok, 95))

    def errors_per_second(self) -> list[tuple[float, int, int]]:
        """(bucket start on the monotonic clock, requests, errors) per 1 s: errors over time for the report."""
        with self._lock:
            samples = list(self.samples)
        if not samples:
            return []
        origin = min(s.started for s in samples)
        buckets: dict[int, list[int]] = {}
        for s in samples:
            bucket = buckets.setdefault(int(s.started - origin), [0, 0])
            bucket[0] += 1
            bucket[1] += not (200 <= s.status < 400)
        return [(origin + sec, total, errors) for sec, (total, errors) in sorted(buckets.items())]


def list_cards(client: httpx.Client, n: int) -> httpx.Response:
    return client.get("/api/prompt-cards", params={"page_size": 10})


def create_card(client: httpx.Client, n: int) -> httpx.Response:
    return client.post(
        "/api/prompt-cards", json={"title": f"stackcheck traffic {n}", "prompt": "p", "category": "stackcheck-traffic"}
    )


class ApiLedger:
    """Ledger writes as prompt cards created through the edge; surviving ones read from a database."""

    def __init__(self, stack: Stack, tag: str) -> None:
        self.stack, self.category = stack, f"ledger-{tag}"
        self._local = threading.local()

    def write(self, n: int) -> None:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.stack.http(timeout=2.0, headers=self.stack.synthetic_headers())
        response = client.post(
            "/api/prompt-cards", json={"title": f"ledger {n}", "prompt": "p", "category": self.category}
        )
        if response.status_code != 201:
            raise RuntimeError(f"write {n} not acknowledged: {response.status_code}")

    def surviving(self, service: str) -> list[int]:
        with self.stack.postgres(service) as conn:
            rows = conn.execute("SELECT title FROM prompt_cards WHERE category = %s", (self.category,)).fetchall()
        return [int(title.split()[1]) for (title,) in rows]


class RedisLedger:
    """Ledger writes as Redis keys (a session store, say): SET ledger:<tag>:<n>."""

    def __init__(self, stack: Stack, tag: str, service: str = "redis") -> None:
        self.stack, self.prefix, self.service = stack, f"ledger:{tag}:", service
        self._client: Any = None

    def write(self, n: int) -> None:
        if self._client is None:
            self._client = self.stack.redis(self.service, admin=True)
        self._client.set(f"{self.prefix}{n}", "1")

    def surviving(self) -> list[int]:
        with self.stack.redis(self.service, admin=True) as client:
            return [int(key.decode().rsplit(":", 1)[1]) for key in client.scan_iter(f"{self.prefix}*", count=1000)]


__all__ = ["ApiLedger", "RedisLedger", "Sample", "Traffic", "Window", "create_card", "list_cards"]
