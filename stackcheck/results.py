"""results.json: everything one run found, in one versioned document.

Everything the HTML report, summary.md and the gate's table show comes from this file, so a
report can be rendered again later (``stackcheck report RUN_ID``). The schema is documented in
docs/results-schema.md; ``load_results`` checks the version and the shape and gives one clear
error for a corrupted or older file.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stackcheck.compliance.model import Result, Severity
from stackcheck.errors import StackcheckError

SCHEMA = "stackcheck.results/1"
REPORTS_DIR = Path("reports")


class ResultsError(StackcheckError):
    """A results.json that cannot be used: missing, corrupted, or of another schema version."""


@dataclass(frozen=True)
class Breach:
    area: str  # compliance | load | chaos | tests
    check: str  # rule id, endpoint/metric, scenario, or test id
    severity: str
    message: str


@dataclass
class RunResults:
    run_id: str
    started_at: str  # ISO 8601, UTC
    finished_at: str
    stack: dict[str, Any]  # name, file, git_rev, target
    fail_on: str
    phases: list[dict[str, Any]] = field(default_factory=list)  # {"name", "seconds"}
    compliance: list[dict[str, Any]] = field(default_factory=list)  # one per rule result
    load: list[dict[str, Any]] = field(default_factory=list)  # one per load run (stackcheck.load's JSON)
    chaos: list[dict[str, Any]] = field(default_factory=list)  # ExperimentResult.to_dict()
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier load runs for trends
    tests: dict[str, int] = field(default_factory=dict)  # passed, failed, skipped, errors
    breaches: list[Breach] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "fail" if self.breaches else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "verdict": self.verdict, **asdict(self)}

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "results.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path


SEVERITY_ORDER = {s.value: s.rank for s in Severity}


def compliance_entry(result: Result) -> dict[str, Any]:
    rule = result.rule
    return {
        "rule": rule.id,
        "area": rule.area.value,
        "severity": rule.severity.value,
        "description": rule.description,
        "outcome": result.outcome.value,
        "subject": result.subject,
        "evidence": result.evidence,
    }


def sort_breaches(breaches: list[Breach]) -> list[Breach]:
    """Worst first: by severity, then area."""
    return sorted(breaches, key=lambda b: (-SEVERITY_ORDER.get(b.severity, 0), b.area, b.check))


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "run_id": str,
    "started_at": str,
    "finished_at": str,
    "verdict": str,
    "stack": dict,
    "fail_on": str,
    "phases": list,
    "compliance": list,
    "load": list,
    "chaos": list,
    "history": list,
    "tests": dict,
    "breaches": list,
}


def load_results(path: Path) -> dict[str, Any]:
    """Read and check a results.json; ResultsError names what is wrong and what to do."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(
            f"no results at {path}",
            "run `stackcheck gate` first, or name an existing run: `stackcheck report --latest`",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(
            f"{path} is not readable JSON: {exc}", "the file is corrupted; run the gate again to produce a new one"
        ) from exc
    if not isinstance(data, dict):
        raise ResultsError(f"{path} does not hold a results object", "run the gate again")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise ResultsError(
            f"{path} has schema {schema!r}; this stackcheck reads {SCHEMA!r}",
            "render it with the stackcheck version that wrote it, or run the gate again",
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ResultsError(
                f"{path}: {key!r} is missing or not a {getattr(kind, '__name__', kind)}",
                "the file is damaged; run the gate again",
            )
    return data


def new_run_id() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def latest_run(reports: Path = REPORTS_DIR) -> Path:
    runs = sorted((p for p in reports.glob("*/results.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ResultsError(f"no runs under {reports}/", "run `stackcheck gate` first")
    return runs[-1].parent


def summary_rows(data: dict[str, Any]) -> list[tuple[str, int, int, int, str]]:
    """(area, checks, passed, failed, worst finding) for the gate's table and summary.md."""
    rows = []
    compliance = data["compliance"]
    if compliance:
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for entry in compliance:
            by_rule.setdefault(entry["rule"], []).append(entry)
        failed = [r for r, entries in by_rule.items() if any(e["outcome"] in ("fail", "error") for e in entries)]
        rows.append(("compliance", len(by_rule), len(by_rule) - len(failed), len(failed), _worst(data, "compliance")))
    if data["load"]:
        failed_runs = sum(1 for run in data["load"] if run.get("breaches"))
        rows.append(("load", len(data["load"]), len(data["load"]) - failed_runs, failed_runs, _worst(data, "load")))
    if data["chaos"]:
        failed_chaos = sum(1 for exp in data["chaos"] if not exp["passed"])
        rows.append(
            ("chaos", len(data["chaos"]), len(data["chaos"]) - failed_chaos, failed_chaos, _worst(data, "chaos"))
        )
    tests = data["tests"]
    if tests:
        bad = tests.get("failed", 0) + tests.get("errors", 0)
        total = bad + tests.get("passed", 0) + tests.get("skipped", 0)
        rows.append(("tests", total, tests.get("passed", 0), bad, _worst(data, "tests")))
    return rows


def _worst(data: dict[str, Any], area: str) -> str:
    breach = next((b for b in data["breaches"] if b["area"] == area), None)
    return f"[{breach['severity']}] {breach['check']}: {breach['message']}"[:110] if breach else "-"


def table(data: dict[str, Any]) -> str:
    lines = [f"{'area':<11} {'checks':>6} {'passed':>6} {'failed':>6}  worst finding"]
    lines += [f"{a:<11} {c:>6} {p:>6} {f:>6}  {w}" for a, c, p, f, w in summary_rows(data)]
    return "\n".join(lines)
