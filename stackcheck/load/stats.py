"""Exact latency statistics from every recorded sample.

Percentiles use the nearest-rank definition (``stackcheck.stats.percentile``) on all samples,
so they are exact, not bucketed: Locust's own stats round response times to about two
significant digits. The HdrHistogram written next to the report (3 significant digits) is the
compact raw form for other tools.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from stackcheck.stats import percentile

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
HISTOGRAM_MAX_US = 3_600_000_000  # one hour
HISTOGRAM_DIGITS = 3


@dataclass(frozen=True)
class LoadSample:
    """One request. ``t`` is its completion, seconds since the run started."""

    t: float
    endpoint: str
    group: str
    latency_ms: float  # from the intended send time in open loop, from the actual send in closed loop
    late_ms: float = 0.0  # open loop: how long after its scheduled time the request was sent
    error: str = ""  # "" for success, else a kind: "http-503", "timeout", "connection", ...
    ttft_ms: float | None = None  # a streamed answer: its first token (from the same start as latency_ms)

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class LatencySummary:
    count: int
    errors: int
    errors_by_kind: dict[str, int]
    rps: float
    mean_ms: float
    max_ms: float
    percentiles_ms: dict[str, float]  # "p50", "p90", "p95", "p99", "p99.9"
    late: int = 0  # open loop: sent later than scheduled (beyond the lateness threshold)
    ttft_ms: dict[str, float] = field(default_factory=dict)  # streamed answers: time to first token, by percentile

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    def p(self, q: float) -> float:
        return self.percentiles_ms[pname(q)]

    def ttft(self, q: float) -> float:
        """A percentile of the time to first token; NaN without a streamed answer."""
        return self.ttft_ms.get(pname(q), math.nan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "errors_by_kind": self.errors_by_kind,
            "rps": self.rps,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            "percentiles_ms": self.percentiles_ms,
            "late": self.late,
            "ttft_ms": self.ttft_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySummary:
        return cls(
            count=data["count"],
            errors=data["errors"],
            errors_by_kind=dict(data["errors_by_kind"]),
            rps=data["rps"],
            mean_ms=data["mean_ms"],
            max_ms=data["max_ms"],
            percentiles_ms=dict(data["percentiles_ms"]),
            late=data["late"],
            ttft_ms=dict(data.get("ttft_ms") or {}),  # written since streamed answers are measured
        )


def pname(q: float) -> str:
    return f"p{q:g}"


def summarize(samples: Sequence[LoadSample], duration_s: float, late_threshold_ms: float = 10.0) -> LatencySummary:
    """Latency of every sample (errors included: a slow 503 is still a slow answer)."""
    values = sorted(s.latency_ms for s in samples)
    errors = Counter(s.error for s in samples if s.error)
    first_tokens = sorted(s.ttft_ms for s in samples if s.ttft_ms is not None and s.ok)
    return LatencySummary(
        count=len(values),
        errors=sum(errors.values()),
        errors_by_kind=dict(sorted(errors.items())),
        rps=len(values) / duration_s if duration_s > 0 else 0.0,
        mean_ms=math.fsum(values) / len(values) if values else math.nan,
        max_ms=values[-1] if values else math.nan,
        percentiles_ms={pname(q): percentile(values, q) for q in PERCENTILES},
        late=sum(s.late_ms > late_threshold_ms for s in samples),
        ttft_ms={pname(q): percentile(first_tokens, q) for q in PERCENTILES} if first_tokens else {},
    )


@dataclass(frozen=True)
class Interval:
    """One second of the run, by completion time."""

    second: int
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    late: int
    users: int

    CSV_HEADER = ("second", "rps", "errors", "p50_ms", "p95_ms", "p99_ms", "late", "users")

    def csv_row(self) -> list[str]:
        def ms(v: float) -> str:
            return "" if math.isnan(v) else f"{v:.3f}"

        values = (self.p50_ms, self.p95_ms, self.p99_ms)
        return [
            str(self.second),
            str(self.requests),
            str(self.errors),
            *map(ms, values),
            str(self.late),
            str(self.users),
        ]


@dataclass
class IntervalSeries:
    """Per-1 s buckets, filled incrementally as samples arrive (for the live view and the abort rule)."""

    late_threshold_ms: float = 10.0
    buckets: dict[int, list[LoadSample]] = field(default_factory=dict)
    users: dict[int, int] = field(default_factory=dict)

    def add(self, samples: Iterable[LoadSample]) -> None:
        for s in samples:
            self.buckets.setdefault(int(s.t), []).append(s)

    def interval(self, second: int, group: str | None = None) -> Interval:
        samples = [s for s in self.buckets.get(second, []) if group is None or s.group == group]
        values = sorted(s.latency_ms for s in samples)
        return Interval(
            second=second,
            requests=len(values),
            errors=sum(not s.ok for s in samples),
            p50_ms=percentile(values, 50),
            p95_ms=percentile(values, 95),
            p99_ms=percentile(values, 99),
            late=sum(s.late_ms > self.late_threshold_ms for s in samples),
            users=self.users.get(second, 0),
        )

    def rows(self, until: int) -> list[Interval]:
        return [self.interval(second) for second in range(until)]


def histogram(samples: Iterable[LoadSample]) -> HdrHistogram:
    """HdrHistogram of latencies in microseconds, 3 significant digits."""
    hist = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
    for s in samples:
        hist.record_value(min(max(1, round(s.latency_ms * 1000)), HISTOGRAM_MAX_US))
    return hist


def decode_histogram(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode())
