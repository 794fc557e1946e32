"""What the HTML page, summary.md and the drill record share: reading results.json's entries."""

from __future__ import annotations

import contextlib
import datetime
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stackcheck.results import ResultsError

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "p99.9")
_GRADE = re.compile(r"score (-?\d+) grade ([A-F][+-]?)")
_NAMED_GRADE = re.compile(r"(Observatory|worst-route) score (-?\d+) grade ([A-F][+-]?) on ([^\[]*) \[")


@contextlib.contextmanager
def entries_checked(results: Path) -> Iterator[None]:
    """load_results checks the top level; a damaged entry deeper down is the same problem, said the same way."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(
            f"{results}: an entry is malformed ({type(exc).__name__}: {exc})", "the file is damaged; run the gate again"
        ) from exc


def ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def seconds(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, int | float) and math.isfinite(value) else "not measured"


def objective_text(value: Any) -> str:
    return f"{value:g} s" if isinstance(value, int | float) else "none set"


def wall_clock(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def header_grades(compliance: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(what, score, grade) from the headers-grade results' evidence: its two named scores
    ("Observatory score 115 grade A+ on GET ... [...]; worst-route score 30 grade D on error 404 [...]"),
    each as ("Observatory score: GET ...", 115, "A+"); evidence of older runs ("score 105 grade A+")
    as (subject, 105, "A+")."""
    grades = []
    for entry in compliance:
        if entry.get("rule") != "headers-grade":
            continue
        evidence = str(entry.get("evidence", ""))
        named = [(f"{m[1]} score: {m[4].strip()}", int(m[2]), m[3]) for m in _NAMED_GRADE.finditer(evidence)]
        legacy = _GRADE.search(evidence)
        if named:
            grades += named
        elif legacy:
            grades.append((str(entry.get("subject", "")), int(legacy.group(1)), legacy.group(2)))
    return grades


def grade_summary(
    compliance: list[dict[str, Any]], text: Callable[[str], str], bold: Callable[[str], str]
) -> str | None:
    """The header scores in words (``text`` escapes for the output format, ``bold`` marks a grade):
    the two named scores (Observatory score of the entry route, worst-route score over every
    fetched response), or for runs written before them the lowest grade."""
    grades = header_grades(compliance)
    if not grades:
        return None
    named = [g for g in grades if g[0].startswith(("Observatory score: ", "worst-route score: "))]
    if named:
        parts = []
        for what, points, letter in named:
            name, _, where = what.partition(": ")
            parts.append(f"{text(name)} {bold(letter)} {points} on {text(where)}")
        return "Header scores: " + "; ".join(parts)
    what, points, letter = min(grades, key=lambda g: g[1])
    return f"Header grade: {bold(letter)} (score {points}, lowest of {len(grades)} responses; worst on {text(what)})"


def recovery_lines(experiment: dict[str, Any]) -> list[str]:
    """RTO and RPO in words, each against its objective."""
    objective = experiment.get("objective") or {}
    lines = []
    rto = experiment.get("rto")
    if rto:
        probes = f"{rto.get('failed_probes', 0)}/{rto.get('total_probes', 0)} probes failed"
        lines.append(
            f"RTO {seconds(rto.get('rto_s'))} (objective {objective_text(objective.get('rto_s'))}); "
            f"resolution {rto.get('resolution_s', 0):g} s, {probes}"
        )
    rpo = experiment.get("rpo")
    if rpo:
        lost = len(rpo.get("lost") or [])
        lines.append(
            f"RPO {seconds(rpo.get('rpo_s'))} (objective {objective_text(objective.get('rpo_s'))}); "
            f"{rpo.get('acknowledged', 0)}/{rpo.get('attempted', 0)} writes acknowledged, {lost} acknowledged lost, "
            f"{len(rpo.get('duplicates') or [])} duplicated, {len(rpo.get('unexpected') or [])} unexpected"
        )
    return lines or ["no RTO or RPO measured"]


EVENT_LABELS = {
    "steady_state": "steady state",
    "fault_start": "fault injected",
    "fault_end": "fault removed",
    "first_error": "first error",
    "recovered": "recovered",
    "action": "action",
    "verify": "verify",
    "rollback": "rollback",
    "note": "note",
}
