"""The DR drill record: one chaos scenario written up for people (drill.html and drill.md).

Scenario, objective, every step with its wall-clock time, RTO/RPO against the objectives,
observations, breaches, sign-off fields, and the earlier runs of the same drill on the same stack
from the history (quarter over quarter); the run is then added to the history. The sign-off
fields are blank until ``stackcheck sign-off`` stores them in the history and writes the record
again with them (``render_signed``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from stackcheck.load.history import DrillRecord, History
from stackcheck.report import charts, page
from stackcheck.report.common import (
    EVENT_LABELS,
    entries_checked,
    objective_text,
    recovery_lines,
    seconds,
    wall_clock,
)
from stackcheck.report.summary import cell, md_table
from stackcheck.results import ResultsError, load_results

BLANK = "______________________"
CHECKBOXES = "[ ] yes  [ ] no"  # to tick by hand on a printed record


def find_experiment(data: dict[str, Any], scenario: str) -> dict[str, Any]:
    exp: dict[str, Any]
    for exp in data["chaos"]:
        if exp.get("scenario") == scenario:
            return exp
    raise ResultsError(
        f"run {data['run_id']} holds no result for scenario {scenario!r} (the test failed before the experiment "
        f"finished, or was skipped)",
        "see the pytest output above; fix the stack or the test and run the drill again",
    )


def render_drill(
    run_dir: Path, scenario: str, operator: str | None = None, history: History | None = None, drill: str | None = None
) -> tuple[Path, Path, bool]:
    """Write drill.html and drill.md from ``run_dir/results.json``: (html, markdown, objectives met).
    With a history, the record lists the earlier runs of ``drill`` (default: the scenario's name)
    on this stack, and this run is added to it."""
    results = run_dir / "results.json"
    data = load_results(results)
    exp = find_experiment(data, scenario)
    with entries_checked(results):
        record = drill_record(data, exp, drill or scenario, operator)
        earlier = history.drills(record.drill, record.stack) if history is not None else None
        html_path, md_path = _write(run_dir, data, exp, record, earlier)
    if history is not None:
        history.add_drill(record)
    return html_path, md_path, bool(exp.get("passed"))


def render_signed(run_dir: Path, record: DrillRecord, history: History) -> tuple[Path, Path]:
    """Write drill.html and drill.md of a signed-off run again, with its sign-off and the same
    earlier runs (those before it in the history; later ones are not earlier drills of it)."""
    results = run_dir / "results.json"
    data = load_results(results)
    exp = find_experiment(data, record.scenario)
    earlier = [
        r
        for r in history.drills(record.drill, record.stack)
        if (r.created_at, r.run_id) < (record.created_at, record.run_id)
    ]
    with entries_checked(results):
        return _write(run_dir, data, exp, record, earlier)


def _write(
    run_dir: Path, data: dict[str, Any], exp: dict[str, Any], record: DrillRecord, earlier: list[DrillRecord] | None
) -> tuple[Path, Path]:
    html_path, md_path = run_dir / "drill.html", run_dir / "drill.md"
    html_path.write_text(drill_html(data, exp, record, earlier))
    md_path.write_text(drill_md(data, exp, record, earlier))
    return html_path, md_path


def drill_record(data: dict[str, Any], exp: dict[str, Any], drill: str, operator: str | None) -> DrillRecord:
    """The history's entry for one drill run, from its results.json."""
    rto, rpo, objective = exp.get("rto") or {}, exp.get("rpo"), exp.get("objective") or {}
    events = exp.get("events") or []
    return DrillRecord(
        run_id=data["run_id"],
        created_at=wall_clock(events[0]["wall"]) if events else data["started_at"],
        drill=drill,
        scenario=str(exp.get("scenario", "?")),
        stack=str(data["stack"].get("file", "?")),
        git_rev=str(data["stack"].get("git_rev", "?")),
        rto_s=rto.get("rto_s"),
        rto_objective_s=objective.get("rto_s"),
        rpo_s=None if rpo is None else rpo.get("rpo_s"),
        rpo_objective_s=objective.get("rpo_s"),
        acknowledged=None if rpo is None else rpo.get("acknowledged"),
        lost=None if rpo is None else len(rpo.get("lost") or []),
        passed=bool(exp.get("passed")),
        breaches=tuple(str(b) for b in exp.get("breaches") or []),
        operator=operator,
    )


HISTORY_HEADERS = ("run", "date", "RTO", "RTO objective", "RPO", "RPO objective", "lost / acknowledged", "outcome",
                   "operator", "reviewer", "signed off", "accepted", "note")  # fmt: skip


def accepted_text(record: DrillRecord) -> str:
    if record.accepted is None:
        return "-"
    if not record.accepted:
        return "no"
    return f"yes, breach accepted: {record.breach_accepted}" if record.breach_accepted else "yes"


def _history_rows(earlier: list[DrillRecord]) -> list[tuple[str, ...]]:
    def sign(value: str | None) -> str:
        return value if value else "-"

    return [
        (
            r.run_id,
            r.created_at,
            seconds(r.rto_s),
            objective_text(r.rto_objective_s),
            seconds(r.rpo_s),
            objective_text(r.rpo_objective_s),
            "-" if r.lost is None else f"{r.lost} / {r.acknowledged}",
            "PASS" if r.passed else "FAIL: " + "; ".join(r.breaches),
            sign(r.operator),
            sign(r.reviewer),
            sign(r.signed_off_at),
            accepted_text(r),
            sign(r.note),
        )
        for r in earlier
    ]


def _history_intro(exp: dict[str, Any], earlier: list[DrillRecord]) -> str:
    drill = earlier[0].drill if earlier else str(exp.get("scenario", "?"))
    return f"{len(earlier)} earlier run(s) of drill {drill} on this stack in the history, oldest first"


def _steps(exp: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    events = exp.get("events") or []
    origin = events[0]["mono"] if events else 0.0
    return [
        (
            str(i),
            wall_clock(e["wall"]),
            f"+{e['mono'] - origin:.3f} s",
            EVENT_LABELS.get(e["kind"], e["kind"]),
            " ".join(x for x in (e.get("name", ""), e.get("detail", "")) if x),
        )
        for i, e in enumerate(events, 1)
    ]


def _objective(exp: dict[str, Any]) -> str:
    objective = exp.get("objective") or {}
    return f"RTO {objective_text(objective.get('rto_s'))}, RPO {objective_text(objective.get('rpo_s'))}"


def _outcome(exp: dict[str, Any]) -> str:
    return "objectives met" if exp.get("passed") else "objective breached"


def _history_html(exp: dict[str, Any], earlier: list[DrillRecord] | None) -> str:
    if earlier is None:
        return '<h2>Earlier drills</h2><p class="empty">no history (--no-history)</p>'
    if not earlier:
        return '<h2>Earlier drills</h2><p class="empty">none: this is the first run of this drill in the history</p>'
    rows = _history_rows(earlier)
    table = page.table(HISTORY_HEADERS, rows, "drill-history", bad=[not r.passed for r in earlier])
    return f"<h2>Earlier drills</h2><p>{escape(_history_intro(exp, earlier))}</p>{table}"


def _history_md(exp: dict[str, Any], earlier: list[DrillRecord] | None) -> list[str]:
    if earlier is None:
        return ["## Earlier drills", "", "no history (--no-history)"]
    if not earlier:
        return ["## Earlier drills", "", "none: this is the first run of this drill in the history"]
    rows: list[tuple[object, ...]] = list(_history_rows(earlier))
    return ["## Earlier drills", "", _history_intro(exp, earlier), "", *md_table(HISTORY_HEADERS, rows)]


def _sign_off(record: DrillRecord) -> list[tuple[str, str]]:
    """The sign-off fields: as signed, or blank lines to fill in by hand."""
    if not record.signed_off:
        return [
            ("operator", record.operator or BLANK),
            ("reviewer", BLANK),
            ("date", BLANK),
            ("outcome accepted", CHECKBOXES),
            ("notes", BLANK),
        ]
    return [
        ("operator", record.operator or "-"),
        ("reviewer", str(record.reviewer)),
        ("date", record.signed_off_at or "-"),
        ("outcome accepted", accepted_text(record)),
        ("notes", record.note or "-"),
    ]


def drill_html(
    data: dict[str, Any], exp: dict[str, Any], record: DrillRecord, earlier: list[DrillRecord] | None = None
) -> str:
    passed = bool(exp.get("passed"))
    scenario = escape(str(exp.get("scenario", "?")))
    started = exp["events"][0]["wall"] if exp.get("events") else None
    breaches = exp.get("breaches") or []
    observations = exp.get("observations") or []
    charts.new_page()
    bars = charts.recovery_bars(exp)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>DR drill record: {scenario}</title><style>{page.CSS}</style></head><body>",
        f"<h1>DR drill record: {scenario}</h1>",
        page.table(
            ("field", "value"),
            [
                ("scenario", exp.get("scenario", "?")),
                ("run", data["run_id"]),
                ("stack", f"{data['stack'].get('file', '?')} at {data['stack'].get('git_rev', '?')}"),
                ("started", wall_clock(started) if started is not None else data["started_at"]),
                ("objective", _objective(exp)),
            ],
            "drill-facts",
        ),
        f'<div class="verdict {"pass" if passed else "fail"}" id="verdict"><span class="word">'
        f"{'PASS' if passed else 'FAIL'}</span> {escape(_outcome(exp))}",
        '<ol class="breaches">' + "".join(f"<li>{escape(b)}</li>" for b in breaches) + "</ol>" if breaches else "",
        "</div>",
        "<h2>Recovery against objectives</h2><ul>",
        "".join(f"<li>{escape(line)}</li>" for line in recovery_lines(exp)),
        "</ul>",
        page.chart("chaos-recovery", bars) if bars is not None else "",
        "<h2>Steps</h2>",
        page.chart("chaos-timeline", charts.chaos_timeline(exp)),
        page.table(("#", "wall clock", "since start", "step", "what"), _steps(exp), "steps", numeric=(0,)),
        "<h2>Observations</h2>",
        "<ul>" + "".join(f"<li>{escape(o)}</li>" for o in observations) + "</ul>"
        if observations
        else '<p class="empty">none recorded</p>',
        _history_html(exp, earlier),
        "<h2>Sign-off</h2>",
        page.table(("field", "entry"), _sign_off(record), "signoff"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def drill_md(
    data: dict[str, Any], exp: dict[str, Any], record: DrillRecord, earlier: list[DrillRecord] | None = None
) -> str:
    breaches = exp.get("breaches") or []
    observations = exp.get("observations") or []
    lines = [
        f"# DR drill record: {cell(exp.get('scenario', '?'))}",
        "",
        f"- Run: `{cell(data['run_id'])}`",
        f"- Stack: `{cell(data['stack'].get('file', '?'))}` at `{cell(data['stack'].get('git_rev', '?'))}`",
        f"- Objective: {_objective(exp)}",
        f"- Outcome: **{'PASS' if exp.get('passed') else 'FAIL'}**, {_outcome(exp)}",
        *(f"- Breach: {cell(b)}" for b in breaches),
        "",
        "## Recovery against objectives",
        "",
        *(f"- {cell(line)}" for line in recovery_lines(exp)),
        "",
        "## Steps",
        "",
        *md_table(("#", "wall clock", "since start", "step", "what"), list(_steps(exp))),
        "",
        "## Observations",
        "",
        *([f"- {cell(o)}" for o in observations] or ["none recorded"]),
        "",
        *_history_md(exp, earlier),
        "",
        "## Sign-off",
        "",
        *(f"- {field.capitalize()}: {v if v in (BLANK, CHECKBOXES) else cell(v)}" for field, v in _sign_off(record)),
    ]
    return "\n".join(lines) + "\n"
