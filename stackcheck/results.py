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
from enum import Enum
from pathlib import Path
from typing import Any

from stackcheck.compliance.model import Result, Severity
from stackcheck.errors import StackcheckError

SCHEMA = "stackcheck.results/2"
REPORTS_DIR = Path("reports")


class ResultsError(StackcheckError):
    """A results.json that cannot be used: missing, corrupted, or of another schema version."""


@dataclass(frozen=True)
class Breach:
    area: str  # compliance | load | chaos | tests
    check: str  # rule id, endpoint/metric, scenario, or test id
    severity: str
    message: str


class CheckStatus(Enum):
    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"  # failed below the gate's severity: shown, does not fail the gate
    NOT_EVALUATED = "not_evaluated"  # skipped, xfailed, errored or found nothing: never a pass
    DISABLED = "disabled"  # switched off by name, with the reason, in the stack file or policy


@dataclass(frozen=True)
class CheckVerdict:
    """The verdict of one product check (a compliance rule, a load run or its regression check, a
    chaos scenario) as the gate judged it."""

    area: str
    check: str
    status: CheckStatus
    severity: str
    reason: str = ""


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
    checks: list[CheckVerdict] = field(default_factory=list)
    disabled: dict[str, str] = field(default_factory=dict)  # check -> reason, as the stack file/policy say
    breaches: list[Breach] = field(default_factory=list)
    warnings: list[Breach] = field(default_factory=list)  # findings below fail_on, never hidden

    @property
    def verdict(self) -> str:
        return "fail" if self.breaches else "pass"

    def to_dict(self) -> dict[str, Any]:
        data = {"schema": SCHEMA, "verdict": self.verdict, **asdict(self)}
        data["checks"] = [c | {"status": c["status"].value} for c in data["checks"]]
        return data

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
    "checks": list,
    "disabled": dict,
    "breaches": list,
    "warnings": list,
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


COLUMNS = ("area", "checks", "passed", "failed", "not eval", "disabled", "warnings", "worst finding")
Row = tuple[str, int, int, int, int, int, int, str]


def summary_rows(data: dict[str, Any]) -> list[Row]:
    """One row per area from the checks' verdicts (and the project's own test counts)."""
    rows: list[Row] = []
    for area in ("compliance", "load", "chaos"):
        checks = [c for c in data["checks"] if c["area"] == area]
        if not checks:
            continue
        count = {s: sum(1 for c in checks if c["status"] == s.value) for s in CheckStatus}
        warned = sum(1 for w in data["warnings"] if w["area"] == area)
        rows.append(
            (
                area,
                len(checks),
                count[CheckStatus.PASSED] + count[CheckStatus.WARNING],
                count[CheckStatus.FAILED],
                count[CheckStatus.NOT_EVALUATED],
                count[CheckStatus.DISABLED],
                warned,
                _worst(data, area),
            )
        )
    tests = data["tests"]
    if any(c["area"] == "tests" for c in data["breaches"]) or (tests and not data["checks"]):
        bad = tests.get("failed", 0) + tests.get("errors", 0)
        total = bad + tests.get("passed", 0) + tests.get("skipped", 0)
        rows.append(("tests", total, tests.get("passed", 0), bad, tests.get("skipped", 0), 0, 0, _worst(data, "tests")))
    return rows


def summary_line(data: dict[str, Any]) -> str:
    """``PASS: 52 checks, 0 failed, 0 not evaluated, 2 disabled, 3 warnings``."""
    checks = data["checks"]
    failed = sum(1 for c in checks if c["status"] == CheckStatus.FAILED.value)
    unevaluated = sum(1 for c in checks if c["status"] == CheckStatus.NOT_EVALUATED.value)
    disabled = sum(1 for c in checks if c["status"] == CheckStatus.DISABLED.value) or len(data["disabled"])
    warnings = len(data["warnings"])
    return (
        f"{data['verdict'].upper()}: {len(checks)} checks, {failed} failed, {unevaluated} not evaluated, "
        f"{disabled} disabled, {warnings} warning{'s' if warnings != 1 else ''}"
    )


def _worst(data: dict[str, Any], area: str) -> str:
    breach = next((b for b in data["breaches"] if b["area"] == area), None)
    return f"[{breach['severity']}] {breach['check']}: {breach['message']}"[:110] if breach else "-"


def findings_below_gate(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Warnings other than unevaluated checks (which the NOT EVALUATED lines already name)."""
    return [w for w in data["warnings"] if not w["message"].startswith("NOT EVALUATED: ")]


def unlisted_disabled(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Disabled checks that no test collected (a disabled rule is not collected at all)."""
    listed = {c["check"] for c in data["checks"]}
    return [(check, reason) for check, reason in data["disabled"].items() if check not in listed]


def table(data: dict[str, Any]) -> str:
    """The gate's table, then every check that was not evaluated or disabled, with its reason."""
    lines = [f"{COLUMNS[0]:<11} " + " ".join(f"{h:>8}" for h in COLUMNS[1:-1]) + f"  {COLUMNS[-1]}"]
    lines += [
        f"{a:<11} {c:>8} {p:>8} {f:>8} {n:>8} {d:>8} {w:>8}  {x}" for a, c, p, f, n, d, w, x in summary_rows(data)
    ]
    for check in data["checks"]:
        if check["status"] in (CheckStatus.NOT_EVALUATED.value, CheckStatus.DISABLED.value):
            word = "NOT EVALUATED" if check["status"] == CheckStatus.NOT_EVALUATED.value else "DISABLED"
            lines.append(f"{word} {check['area']} {check['check']}: {check['reason']}"[:200])
    lines += [f"DISABLED {check}: {reason}"[:200] for check, reason in unlisted_disabled(data)]
    for warning in findings_below_gate(data):
        lines.append(
            f"WARNING [{warning['severity']}] {warning['area']} {warning['check']}: {warning['message']}"[:200]
        )
    lines.append(summary_line(data))
    return "\n".join(lines)
