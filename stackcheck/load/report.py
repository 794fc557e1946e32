"""A load run's results and their files under ``reports/<run-id>/load/``.

report.json      the results (``schema`` = "stackcheck.load/1", checked by ``validate``)
intervals.csv    per 1 s: rps, errors, p50/p95/p99 ms, late sends, users
histogram.hdr    HdrHistogram (microseconds, 3 digits) per endpoint and in total: NAME<TAB>base64
samples.csv.gz   every request: t_s, endpoint, group, latency_ms, late_ms, error, ttft_ms (streamed only)
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackcheck.load.errors import ReportSchemaError
from stackcheck.load.objectives import Metric, ObjectiveBreach
from stackcheck.load.regression import RegressionResult
from stackcheck.load.stats import Interval, LatencySummary, LoadSample, histogram

SCHEMA = "stackcheck.load/1"

_SUMMARY_KEYS = {
    "count": int, "errors": int, "error_rate": float, "errors_by_kind": dict, "rps": float,
    "mean_ms": float, "max_ms": float, "percentiles_ms": dict, "late": int,
}  # fmt: skip
_TOP_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str, "run_id": str, "stack": str, "git_rev": str, "target": str, "profile": dict, "mode": str,
    "workers": int, "started_at": str, "duration_s": float, "aborted": (str, type(None)), "total": dict,
    "endpoints": dict, "groups": dict, "open_loop": (dict, type(None)), "breaches": list,
    "regression": (dict, type(None)),
    "machine": dict,
}  # fmt: skip


@dataclass(frozen=True)
class OpenLoopStats:
    """Coordinated omission made visible: what the schedule asked for against what was sent."""

    scheduled: int  # sends due before the run ended
    sent: int
    late: int  # sent more than the lateness threshold after their scheduled time
    max_late_ms: float
    late_threshold_ms: float

    @property
    def unsent(self) -> int:
        return max(0, self.scheduled - self.sent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "unsent": self.unsent,
            "late": self.late,
            "max_late_ms": self.max_late_ms,
            "late_threshold_ms": self.late_threshold_ms,
        }


@dataclass
class LoadReport:
    run_id: str
    stack: str
    git_rev: str
    target: str
    profile: dict[str, Any]
    mode: str
    workers: int
    started_at: str
    duration_s: float
    aborted: str | None
    total: LatencySummary
    endpoints: dict[str, LatencySummary]
    groups: dict[str, LatencySummary]
    open_loop: OpenLoopStats | None
    breaches: list[ObjectiveBreach]
    machine: dict[str, Any]
    regression: RegressionResult | None = None
    intervals: list[Interval] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breaches and self.aborted is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "stack": self.stack,
            "git_rev": self.git_rev,
            "target": self.target,
            "profile": self.profile,
            "mode": self.mode,
            "workers": self.workers,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "aborted": self.aborted,
            "total": self.total.to_dict(),
            "endpoints": {k: v.to_dict() for k, v in self.endpoints.items()},
            "groups": {k: v.to_dict() for k, v in self.groups.items()},
            "open_loop": self.open_loop.to_dict() if self.open_loop else None,
            "breaches": [
                {"scope": b.scope, "objective": b.objective, "metric": b.metric.value, "target": b.target}
                | {"measured": b.measured}
                for b in self.breaches
            ],
            "regression": self.regression.to_dict() if self.regression else None,
            "machine": self.machine,
        }

    def write(self, directory: Path, samples: Iterable[LoadSample]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        samples = list(samples)
        (directory / "report.json").write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")
        with (directory / "intervals.csv").open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(Interval.CSV_HEADER)
            out.writerows(i.csv_row() for i in self.intervals)
        lines = [f"total\t{histogram(samples).encode().decode()}"]
        for endpoint in sorted(self.endpoints):
            hist = histogram(s for s in samples if s.endpoint == endpoint)
            lines.append(f"{endpoint}\t{hist.encode().decode()}")
        (directory / "histogram.hdr").write_text("\n".join(lines) + "\n")
        with gzip.open(directory / "samples.csv.gz", "wt", newline="") as gz:
            out = csv.writer(gz)
            out.writerow(("t_s", "endpoint", "group", "latency_ms", "late_ms", "error", "ttft_ms"))
            out.writerows(
                (f"{s.t:.6f}", s.endpoint, s.group, repr(s.latency_ms), repr(s.late_ms), s.error, _ms(s.ttft_ms))
                for s in samples
            )


def validate(data: dict[str, Any]) -> None:
    """Raise ReportSchemaError unless ``data`` is a report of this schema version."""
    if data.get("schema") != SCHEMA:
        raise ReportSchemaError(
            f"report schema is {data.get('schema')!r}, this stackcheck reads {SCHEMA!r}",
            "re-run the load test with this version, or read it with the version that wrote it",
        )
    _check(data, _TOP_KEYS, "report")
    for where in ("total", *(f"endpoints.{k}" for k in data["endpoints"]), *(f"groups.{k}" for k in data["groups"])):
        part = data
        for key in where.split(".", 1):
            part = part[key]
        _check(part, _SUMMARY_KEYS, where)
    for breach in data["breaches"]:
        known = breach.get("metric") in {m.value for m in Metric}
        if not known or not {"scope", "objective", "target", "measured"} <= breach.keys():
            raise ReportSchemaError(f"breach {breach} lacks a key", "write reports with LoadReport.write")


def _check(data: dict[str, Any], keys: dict[str, Any], where: str) -> None:
    for key, kind in keys.items():
        # JSON has one number type: an int is a valid float.
        ok_types = (kind, int) if kind is float else kind
        if key not in data or not isinstance(data[key], ok_types) or isinstance(data[key], bool):
            raise ReportSchemaError(
                f"{where}.{key} is missing or not {getattr(kind, '__name__', kind)}: {data.get(key)!r}",
                "write reports with LoadReport.write",
            )


def _ms(value: float | None) -> str:
    return "" if value is None else repr(value)


def read_samples(directory: Path) -> list[LoadSample]:
    with gzip.open(directory / "samples.csv.gz", "rt", newline="") as gz:
        rows = list(csv.reader(gz))[1:]
    # Six columns in files written before streamed answers were measured.
    return [
        LoadSample(float(t), e, g, float(lat), float(late), err, float(rest[0]) if rest and rest[0] else None)
        for t, e, g, lat, late, err, *rest in rows
    ]
