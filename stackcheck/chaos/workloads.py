"""Workloads that run during experiments, from the stack file's [workloads] and [ledgers]:
background traffic with per-request samples (errors over time, latency before/during/after a
fault), RTO probes, and ledger writes with the read-back of the writes that survived."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from stackcheck.chaos.meters import Probe
from stackcheck.chaos.spec import Ledger, Store, Workload, render, render_value
from stackcheck.errors import StackError
from stackcheck.stack import Stack
from stackcheck.stats import percentile

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
        n = worker
        while not self._stop.is_set() and time.monotonic() < deadline:
            # A new client after a failure: a restarted entry service may be published on another port.
            with self.stack.http(timeout=self.timeout_s, headers=headers) as client:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    started = time.monotonic()
                    try:
                        status = self.request(client, n).status_code
                    except httpx.HTTPError:
                        status = 0
                    with self._lock:
                        self.samples.append(Sample(started, time.monotonic() - started, status))
                    n += self.concurrency
                    if status == 0:
                        break

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
        ok = sorted(s.latency * 1000 for s in chosen if 200 <= s.status < 400)
        p50, p95 = (percentile(ok, 50), percentile(ok, 95)) if ok else (None, None)
        return Window(len(chosen), dict(statuses), p50, p95)

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


class HttpRequest:
    """A workload bound to one experiment's ``${run}``: request number n, and whether an answer is right."""

    def __init__(self, workload: Workload, run: str) -> None:
        self.workload, self.run = workload, run

    def send(self, client: httpx.Client, n: int) -> httpx.Response:
        w = self.workload
        headers = {k: render(v, self.run, n) for k, v in w.headers.items()}
        content = render(w.body, self.run, n) if w.body is not None else None
        json = render_value(w.json, self.run, n) if w.json is not None else None
        return client.request(w.method, render(w.path, self.run, n), headers=headers, json=json, content=content)

    def problem(self, response: httpx.Response) -> str | None:
        """None when the answer is what the workload expects, else what is wrong with it."""
        w = self.workload
        ok_status = response.status_code in w.expect_status if w.expect_status else response.status_code < 400
        if not ok_status:
            return f"{w.describe()} answered {response.status_code}"
        if w.expect_body is not None and w.expect_body not in response.text:
            return f"{w.describe()} answered without {w.expect_body!r}"
        return None


def answer_problem(stack: Stack, request: HttpRequest, timeout: float, n: int = 0) -> str | None:
    """One request through the entrypoint on a fresh connection (verified TLS): None when the
    answer is right, else what went wrong."""
    target = stack.target()
    try:
        with httpx.Client(
            base_url=target.base_url, verify=target.verify, timeout=timeout, headers=stack.synthetic_headers()
        ) as client:
            return request.problem(request.send(client, n))
    except httpx.HTTPError as exc:
        return f"{request.workload.describe()}: {type(exc).__name__} {exc}"


def probe(stack: Stack, request: HttpRequest) -> Probe:
    """An RTO probe: ``answer_problem`` on a fresh connection per probe, numbered from 1."""
    numbers = itertools.count(1)
    return lambda timeout: answer_problem(stack, request, timeout, next(numbers)) is None


LEDGER_WRITE_TIMEOUT_S = 2.0


class LedgerStore:
    """One ledger of the stack file for one experiment: ``write(n)`` raises unless write n was
    acknowledged; ``surviving()`` lists the numbers of the writes found again afterwards."""

    def __init__(self, stack: Stack, ledger: Ledger, workloads: Mapping[str, Workload], run: str) -> None:
        self.stack, self.ledger, self.run = stack, ledger, run
        self._write_request = HttpRequest(workloads[ledger.write.workload], run) if ledger.write.workload else None
        self._read_request = HttpRequest(workloads[ledger.read.workload], run) if ledger.read.workload else None
        self._conn: Any = None  # the writer's connection (writes come from one thread), re-made after a failure

    def write(self, n: int) -> None:
        w = self.ledger.write
        if w.store is Store.HTTP:
            assert self._write_request is not None
            headers = self.stack.synthetic_headers()
            client = self._connection(lambda: self.stack.http(LEDGER_WRITE_TIMEOUT_S, headers=headers))
            try:
                problem = self._write_request.problem(self._write_request.send(client, n))
            except httpx.HTTPError:
                # Dial again next time: a restarted entry service may be published on another port.
                self.close()
                raise
            if problem:
                raise StackError(f"write {n} not acknowledged: {problem}", "see the stack's logs")
            return
        assert w.service is not None
        assert w.statement is not None
        service, statement = w.service, render(w.statement, self.run, n)
        if w.store is Store.SQL:
            conn = self._connection(lambda: self.stack.postgres(service, superuser=w.privileged, autocommit=True))
            try:
                conn.execute(statement)
            except Exception:
                self.close()  # a broken connection stays broken: the next write dials again
                raise
        else:
            self._connection(lambda: self.stack.redis(service, admin=w.privileged)).set(statement, "1")

    def _connection(self, make: Callable[[], Any]) -> Any:
        if self._conn is None:
            self._conn = make()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def records(self) -> list[str]:
        r = self.ledger.read
        if r.store is Store.HTTP:
            assert self._read_request is not None
            with self.stack.http(10.0, headers=self.stack.synthetic_headers()) as client:
                response = self._read_request.send(client, 0)
            problem = self._read_request.problem(response)
            if problem:
                raise StackError(f"ledger {self.ledger.name}: the read-back failed: {problem}", "see the stack's logs")
            return _json_records(response, r.records) if r.records else [response.text]
        assert r.service is not None
        assert r.query is not None
        query = render(r.query, self.run, 0)
        if r.store is Store.SQL:
            with self.stack.postgres(r.service, superuser=r.privileged) as conn:
                return ["\t".join(str(v) for v in row) for row in conn.execute(query).fetchall()]
        with self.stack.redis(r.service, admin=r.privileged) as client:
            return [key.decode() for key in client.scan_iter(query, count=1000)]

    def surviving(self) -> list[int]:
        """Write numbers found, once per record that holds them: a write in two records is a duplicate."""
        pattern = self.ledger.pattern(self.run)
        return [int(n) for record in self.records() for n in sorted(set(pattern.findall(record)))]


def _json_records(response: httpx.Response, records: str) -> list[str]:
    value: Any = response.json()
    for key in records.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, list):
        raise StackError(
            f"the read-back answer has no JSON list at {records!r}", "fix records in the ledger's [read] table"
        )
    return [json.dumps(item) for item in value]


__all__ = ["HttpRequest", "LedgerStore", "Sample", "Traffic", "Window", "answer_problem", "probe"]
