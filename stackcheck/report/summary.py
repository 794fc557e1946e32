"""summary.md: the verdict and the table in Markdown, for a CI job summary or a pull-request comment."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from stackcheck.report.common import PERCENTILE_KEYS, grade_summary, ms, recovery_lines
from stackcheck.results import (
    COLUMNS,
    CheckStatus,
    findings_below_gate,
    summary_line,
    summary_rows,
    unlisted_disabled,
)


def cell(value: object) -> str:
    """One Markdown table cell: no pipes, no line breaks, no HTML (GitHub renders raw tags)."""
    return escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def md_table(headers: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


def render_summary(data: dict[str, Any], run_dir: Path) -> str:
    breaches = data["breaches"]
    word = "FAIL" if breaches else "PASS"
    mark = "\u274c" if breaches else "\u2705"
    lines = [f"## {mark} stackcheck {word}: run `{cell(data['run_id'])}`", ""]
    if breaches:
        lines.append(f"**{len(breaches)} breach{'es' if len(breaches) != 1 else ''}** (worst first):")
        lines.append("")
        lines += [
            f"{i}. **[{cell(b['severity'])}] {cell(b['area'])} {cell(b['check'])}**: {cell(b['message'])}"
            for i, b in enumerate(breaches, 1)
        ]
    else:
        lines.append(f"No objective breached (fail on {cell(data['fail_on'])} and above).")
    lines += ["", f"**{cell(summary_line(data))}**", ""]
    lines += md_table(COLUMNS, list(summary_rows(data)))
    unjudged = [
        (c["area"], c["check"], c["status"].replace("_", " ").upper(), c["reason"])
        for c in data["checks"]
        if c["status"] in (CheckStatus.NOT_EVALUATED.value, CheckStatus.DISABLED.value)
    ]
    unjudged += [("-", check, "DISABLED", reason) for check, reason in unlisted_disabled(data)]
    unjudged += [(w["area"], w["check"], f"WARNING ({w['severity']})", w["message"]) for w in findings_below_gate(data)]
    if unjudged:
        lines += ["", *md_table(("area", "check", "status", "reason"), unjudged)]
    grades = grade_summary(data["compliance"], cell, lambda grade: f"**{cell(grade)}**")
    if grades:
        lines += ["", grades]
    if data["load"]:
        rows: list[tuple[object, ...]] = []
        for run in data["load"]:
            total = run.get("total") or {}
            pct = total.get("percentiles_ms") or {}
            profile = run.get("profile")
            name = profile.get("name", "?") if isinstance(profile, dict) else profile
            rows.append((name, *(ms(pct.get(k)) for k in PERCENTILE_KEYS), ms(total.get("rps")), total.get("errors")))
        lines += ["", *md_table(("load profile", *(f"{k} ms" for k in PERCENTILE_KEYS), "rps", "errors"), rows)]
    if data["chaos"]:
        lines += ["", *md_table(("scenario", "result", "recovery"), _chaos_rows(data["chaos"]))]
    if data["phases"]:
        timings = ", ".join(f"{cell(p.get('name', '?'))} {p.get('seconds', 0):.1f}s" for p in data["phases"])
        lines += ["", f"Phases: {timings}"]
    lines += ["", f"Report: [index.html](index.html) (`{run_dir / 'index.html'}`)"]
    if (run_dir / "junit.xml").exists():
        lines.append(f"JUnit: [junit.xml](junit.xml) (`{run_dir / 'junit.xml'}`)")
    return "\n".join(lines) + "\n"


def _chaos_rows(experiments: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [
        (exp.get("scenario", "?"), "PASS" if exp.get("passed") else "FAIL", "; ".join(recovery_lines(exp)))
        for exp in experiments
    ]
