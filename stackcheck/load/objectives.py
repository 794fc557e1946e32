"""Load objectives (the stack file's ``[objectives.load.NAME]``) evaluated against a run.

An objective's NAME selects what it applies to: an endpoint (``create``), a group of endpoints
(``write``, ``read``, ``health``), ``total`` (every request together), or ``default``: each
endpoint that no endpoint or group objective covers, one by one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from stackcheck.load.stats import IntervalSeries, LatencySummary, LoadSample, summarize
from stackcheck.stackfile import LoadObjective
from stackcheck.stats import percentile

DEFAULT = "default"
TOTAL = "total"


class Metric(Enum):
    P95 = "p95_ms"
    P99 = "p99_ms"
    TTFT_P95 = "ttft_p95_ms"  # streamed answers: time to first token
    ERROR_RATE = "error_rate"
    RPS = "rps"


@dataclass(frozen=True)
class ObjectiveBreach:
    scope: str  # endpoint or group name, or "total"
    objective: str  # the stack file table it comes from
    metric: Metric
    target: float
    measured: float

    def line(self) -> str:
        op = ">=" if self.metric is Metric.RPS else "<="
        return f"{self.scope:<20} {self.metric.value:<11} {op} {_fmt(self.target):>9}  measured {_fmt(self.measured)}"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if not math.isnan(value) else "no data"


def breach_table(breaches: Sequence[ObjectiveBreach]) -> str:
    if not breaches:
        return "no objective breached"
    head = f"{'endpoint/group':<20} {'metric':<11} {'target':>12}  measured"
    return "\n".join([head, *(b.line() for b in breaches)])


def scopes(
    objectives: Mapping[str, LoadObjective], samples: Sequence[LoadSample]
) -> dict[str, tuple[str, list[LoadSample]]]:
    """scope name -> (objective name, samples it covers)."""
    endpoints = sorted({s.endpoint for s in samples})
    groups = {s.endpoint: s.group for s in samples}
    out: dict[str, tuple[str, list[LoadSample]]] = {}
    for name in objectives:
        if name == TOTAL:
            out[TOTAL] = (name, list(samples))
        elif name != DEFAULT:
            out[name] = (name, [s for s in samples if name in (s.endpoint, s.group)])
    if DEFAULT in objectives:
        for endpoint in endpoints:
            if endpoint not in objectives and groups[endpoint] not in objectives:
                out[endpoint] = (DEFAULT, [s for s in samples if s.endpoint == endpoint])
    return out


def evaluate(
    objectives: Mapping[str, LoadObjective], samples: Sequence[LoadSample], duration_s: float
) -> tuple[list[ObjectiveBreach], dict[str, LatencySummary]]:
    """Every breach, and the summary of each scope that was evaluated."""
    breaches: list[ObjectiveBreach] = []
    summaries: dict[str, LatencySummary] = {}
    for scope, (name, covered) in scopes(objectives, samples).items():
        objective = objectives[name]
        summary = summarize(covered, duration_s)
        summaries[scope] = summary
        checks = (
            (Metric.P95, objective.p95_ms, summary.p(95)),
            (Metric.P99, objective.p99_ms, summary.p(99)),
            (Metric.TTFT_P95, objective.ttft_p95_ms, summary.ttft(95)),
            (Metric.ERROR_RATE, objective.max_error_rate, summary.error_rate),
        )
        for metric, target, measured in checks:
            # No requests at all is a breach too: the objective could not be shown to hold.
            # NaN: nothing measured (no request; for TTFT, no streamed answer that succeeded).
            if target is not None and (summary.count == 0 or math.isnan(measured) or measured > target):
                breaches.append(ObjectiveBreach(scope, name, metric, target, measured if summary.count else math.nan))
        if objective.min_rps is not None and summary.rps < objective.min_rps:
            breaches.append(ObjectiveBreach(scope, name, Metric.RPS, objective.min_rps, summary.rps))
    return breaches, summaries


@dataclass
class SustainedBreachWatch:
    """Flags an objective's p95 or error rate over target in every 1 s interval for ``window_s`` seconds.

    Intervals with fewer than ``min_requests`` samples of a scope neither count nor reset.
    """

    objectives: Mapping[str, LoadObjective]
    window_s: int = 10
    min_requests: int = 5

    def check(self, series: IntervalSeries, complete_until: int) -> ObjectiveBreach | None:
        """The first sustained breach in the intervals before ``complete_until``, if any."""
        if self.window_s <= 0:
            return None
        samples = [s for second in range(complete_until) for s in series.buckets.get(second, [])]
        for scope, (name, covered) in scopes(self.objectives, samples).items():
            objective = self.objectives[name]
            by_second: dict[int, list[LoadSample]] = {}
            for s in covered:
                by_second.setdefault(int(s.t), []).append(s)
            for metric, target in ((Metric.P95, objective.p95_ms), (Metric.ERROR_RATE, objective.max_error_rate)):
                if target is None:
                    continue
                run: list[float] = []
                for second in range(complete_until):
                    bucket = by_second.get(second, [])
                    if len(bucket) < self.min_requests:
                        continue
                    if metric is Metric.P95:
                        value = percentile(sorted(s.latency_ms for s in bucket), 95)
                    else:
                        value = sum(not s.ok for s in bucket) / len(bucket)
                    run = [*run, value] if value > target else []
                    if len(run) >= self.window_s:
                        return ObjectiveBreach(scope, name, metric, target, min(run))
        return None
