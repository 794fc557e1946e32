"""index.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from stackcheck.report import charts
from stackcheck.report.common import (
    EVENT_LABELS,
    PERCENTILE_KEYS,
    grade_summary,
    ms,
    recovery_lines,
    wall_clock,
)
from stackcheck.results import (
    COLUMNS,
    CheckStatus,
    findings_below_gate,
    summary_line,
    summary_rows,
    unlisted_disabled,
)

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 48px; color: #1d1d1f; background: #fff; }
h1 { font-size: 24px; margin: 20px 0 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #ddd; }
h3 { margin-bottom: 6px; } .meta { color: #555; font-size: 13px; }
.verdict { border-radius: 8px; padding: 14px 20px; margin: 16px 0; color: #fff; }
.verdict.pass { background: #1e7e34; } .verdict.fail { background: #b3261e; }
.verdict .word { font-size: 30px; font-weight: 700; letter-spacing: 1px; }
.verdict ol { margin: 8px 0 0; padding-left: 22px; } .verdict li { margin: 3px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; width: 100%; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fdecea; } .badge { font-weight: 700; padding: 1px 8px; border-radius: 4px; color: #fff; }
.badge.pass { background: #1e7e34; } .badge.fail { background: #b3261e; } .badge.other { background: #777; }
figure.chart { margin: 10px 0; } figure.chart svg { max-width: 100%; height: auto; }
.journal td:nth-child(-n+2), .steps td:nth-child(-n+3) { white-space: nowrap; }
.empty { color: #666; font-style: italic; } details summary { cursor: pointer; margin: 6px 0; }
"""


def render_page(data: dict[str, Any]) -> str:
    charts.new_page()
    verdict = data["verdict"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>stackcheck {escape(verdict.upper())}: {escape(data['run_id'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>stackcheck report: {escape(data['run_id'])}</h1>",
        _meta(data),
        _verdict(data),
        '<section id="summary"><h2>Summary</h2>',
        f'<p class="summary-line" id="summary-line">{escape(summary_line(data))}</p>',
        table(COLUMNS, list(summary_rows(data)), "summary", numeric=(1, 2, 3, 4, 5, 6)),
        "</section>",
        _unjudged(data),
        _phases(data["phases"]),
        _compliance(data["compliance"]),
        _load(data["load"]),
        _chaos(data["chaos"]),
        _history(data),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    cls: str,
    numeric: Sequence[int] = (),
    bad: Sequence[bool] | None = None,
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{escape(str(v))}</td>' if j in numeric else f"<td>{escape(str(v))}</td>"
            for j, v in enumerate(row)
        )
        marked = ' class="bad"' if bad is not None and bad[i] else ""
        body.append(f"<tr{marked}>{cells}</tr>")
    return f'<table class="{escape(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def badge(passed: bool | None, text: str) -> str:
    kind = "other" if passed is None else ("pass" if passed else "fail")
    return f'<span class="badge {kind}">{escape(text)}</span>'


def chart(name: str, svg: str) -> str:
    return f'<figure class="chart" data-chart="{escape(name)}">{svg}</figure>'


def _meta(data: dict[str, Any]) -> str:
    stack = data["stack"]
    tests = data["tests"]
    counts = ", ".join(f"{n} {k}" for k, n in tests.items())
    return (
        f'<p class="meta">stack {escape(str(stack.get("file", "?")))} at {escape(str(stack.get("git_rev", "?")))}'
        f"{' against ' + escape(str(stack['target'])) if stack.get('target') else ''}; "
        f"{escape(data['started_at'])} to {escape(data['finished_at'])}; fail on {escape(data['fail_on'])} and above; "
        f"tests: {escape(counts or 'none')}</p>"
    )


def _unjudged(data: dict[str, Any]) -> str:
    """Checks that were not evaluated or are disabled, and warnings below the gate: never hidden."""
    rows = [
        (c["area"], c["check"], c["status"].replace("_", " ").upper(), c["severity"], c["reason"])
        for c in data["checks"]
        if c["status"] in (CheckStatus.NOT_EVALUATED.value, CheckStatus.DISABLED.value)
    ]
    rows += [("-", check, "DISABLED", "-", reason) for check, reason in unlisted_disabled(data)]
    rows += [(w["area"], w["check"], "WARNING", w["severity"], w["message"]) for w in findings_below_gate(data)]
    if not rows:
        return ""
    return (
        '<section id="unjudged"><h2>Not evaluated, disabled and warnings</h2>'
        + table(("area", "check", "status", "severity", "reason"), rows, "unjudged")
        + "</section>"
    )


def _verdict(data: dict[str, Any]) -> str:
    breaches = data["breaches"]
    if not breaches:
        return '<div class="verdict pass" id="verdict"><span class="word">PASS</span> no objective breached</div>'
    items = "".join(
        f"<li><b>[{escape(b['severity'])}] {escape(b['area'])} {escape(b['check'])}</b>: {escape(b['message'])}</li>"
        for b in breaches
    )
    noun = "breach" if len(breaches) == 1 else "breaches"
    return (
        f'<div class="verdict fail" id="verdict"><span class="word">FAIL</span> {len(breaches)} {noun}, worst first'
        f'<ol class="breaches">{items}</ol></div>'
    )


def _phases(phases: list[dict[str, Any]]) -> str:
    if not phases:
        return '<section id="phases"><h2>Phase timings</h2><p class="empty">no phases recorded</p></section>'
    rows = [(p.get("name", "?"), f"{p.get('seconds', 0):.1f}") for p in phases]
    rows.append(("total", f"{sum(p.get('seconds', 0) for p in phases):.1f}"))
    return f'<section id="phases"><h2>Phase timings</h2>{table(("phase", "seconds"), rows, "phases", (1,))}</section>'


def _compliance(entries: list[dict[str, Any]]) -> str:
    out = ['<section id="compliance"><h2>Compliance</h2>']
    if not entries:
        return out[0] + '<p class="empty">no compliance results</p></section>'
    grades = grade_summary(entries, escape, lambda grade: f"<b>{escape(grade)}</b>")
    if grades:
        out.append(f'<p class="grade">{grades}</p>')
    else:
        out.append('<p class="grade empty">no header grade in this run</p>')
    headers = ("rule", "severity", "result", "subject", "evidence")
    findings = [e for e in entries if e.get("outcome") != "pass"]
    if findings:
        out.append(f"<h3>Findings ({len(findings)})</h3>")
        out.append(table(headers, [_compliance_row(e) for e in findings], "compliance findings", bad=_bad(findings)))
    else:
        out.append(f'<p class="empty">all {len(entries)} results passed</p>')
    out.append(f"<details><summary>All {len(entries)} compliance results</summary>")
    out.append(table(headers, [_compliance_row(e) for e in entries], "compliance all", bad=_bad(entries)))
    out.append("</details></section>")
    return "".join(out)


def _bad(entries: list[dict[str, Any]]) -> list[bool]:
    return [e.get("outcome") in ("fail", "error") for e in entries]


def _compliance_row(entry: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(entry.get(k, "")) for k in ("rule", "severity", "outcome", "subject", "evidence"))


def load_objectives(run: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, ms) latency lines for the chart: the total/default objectives (when the run carries its
    ``objectives``) and every breached latency target, one line per value."""
    lines: dict[float, list[str]] = {}
    for scope, objective in (run.get("objectives") or {}).items():
        for metric in ("p95_ms", "p99_ms"):
            if scope in ("total", "default") and isinstance(objective.get(metric), int | float):
                lines.setdefault(float(objective[metric]), []).append(f"{metric[:3]} {scope}")
    for breach in run.get("breaches") or []:
        if breach.get("metric") in ("p95_ms", "p99_ms") and isinstance(breach.get("target"), int | float):
            lines.setdefault(float(breach["target"]), []).append(f"{breach['metric'][:3]} {breach.get('scope', '?')}")
    return [(", ".join(dict.fromkeys(labels)), target) for target, labels in lines.items()]


def _load(runs: list[dict[str, Any]]) -> str:
    out = ['<section id="load"><h2>Load</h2>']
    if not runs:
        return out[0] + '<p class="empty">no load runs</p></section>'
    for run in runs:
        passed = not run.get("breaches") and not run.get("aborted")
        out.append(
            f"<h3>{escape(charts.profile_name(run))} {badge(passed, 'PASS' if passed else 'FAIL')}</h3>"
            f'<p class="meta">{escape(str(run.get("mode", "?")))} loop, {escape(str(run.get("workers", "?")))} '
            f"workers, {run.get('duration_s', 0):.0f} s, run {escape(str(run.get('run_id', '?')))}</p>"
        )
        out.append(chart("load-latency", charts.latency_chart(run, load_objectives(run))))
        scopes = {"total": run.get("total") or {}, **(run.get("endpoints") or {})}
        rows = [_percentile_row(scope, summary) for scope, summary in scopes.items()]
        headers = ("scope", "requests", *(f"{k} ms" for k in PERCENTILE_KEYS), "max ms", "rps", "errors")
        out.append(table(headers, rows, "percentiles", numeric=range(1, 10)))
        if run.get("breaches"):
            items = "".join(
                f"<li>{escape(str(b.get('scope')))} {escape(str(b.get('metric')))}: measured "
                f"{escape(str(b.get('measured')))}, objective {escape(str(b.get('target')))}</li>"
                for b in run["breaches"]
            )
            out.append(f"<p>Breaches:</p><ul>{items}</ul>")
        if run.get("aborted"):
            out.append(f"<p><b>{escape(str(run['aborted']))}</b></p>")
        regression = run.get("regression")
        if regression:
            out.append(f"<p>Regression check: <b>{escape(str(regression.get('verdict')))}</b></p>")
    out.append("</section>")
    return "".join(out)


def _percentile_row(scope: str, summary: dict[str, Any]) -> tuple[str, ...]:
    pct = summary.get("percentiles_ms") or {}
    count = summary.get("count", 0)
    errors = summary.get("errors", 0)
    rate = f" ({errors / count:.1%})" if count else ""
    return (
        scope,
        str(count),
        *(ms(pct.get(k)) for k in PERCENTILE_KEYS),
        ms(summary.get("max_ms")),
        ms(summary.get("rps")),
        f"{errors}{rate}",
    )


def _chaos(experiments: list[dict[str, Any]]) -> str:
    out = ['<section id="chaos"><h2>Chaos</h2>']
    if not experiments:
        return out[0] + '<p class="empty">no chaos scenarios</p></section>'
    for exp in experiments:
        out.append(experiment_html(exp))
    out.append("</section>")
    return "".join(out)


def experiment_html(exp: dict[str, Any]) -> str:
    passed = bool(exp.get("passed"))
    out = [
        f'<div class="scenario"><h3>{escape(str(exp.get("scenario", "?")))} '
        f"{badge(passed, 'PASS' if passed else 'FAIL')}</h3>"
    ]
    out.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in recovery_lines(exp)) + "</ul>")
    out.append(chart("chaos-timeline", charts.chaos_timeline(exp)))
    bars = charts.recovery_bars(exp)
    if bars is not None:
        out.append(chart("chaos-recovery", bars))
    if exp.get("breaches"):
        out.append("<p><b>Breaches</b></p><ul>" + "".join(f"<li>{escape(b)}</li>" for b in exp["breaches"]) + "</ul>")
    observations = exp.get("observations") or []
    if observations:
        out.append("<p><b>Observations</b></p><ul>" + "".join(f"<li>{escape(o)}</li>" for o in observations) + "</ul>")
    out.append("<p><b>Journal</b></p>" + journal_table(exp.get("events") or []) + "</div>")
    return "".join(out)


def journal_table(events: list[dict[str, Any]]) -> str:
    origin = events[0]["mono"] if events else 0.0
    rows = [
        (
            f"+{e['mono'] - origin:.3f}",
            wall_clock(e["wall"]),
            EVENT_LABELS.get(e["kind"], e["kind"]),
            e.get("name", ""),
            e.get("detail", ""),
        )
        for e in events
    ]
    return table(("t (s)", "wall clock", "step", "name", "detail"), rows, "journal", numeric=(0,))


def history_points(data: dict[str, Any]) -> list[tuple[str, str, float, bool]]:
    """(profile, run, p95 ms, regressed) for each stored run, oldest first, then this run's load runs."""
    points = []
    entries = sorted(data["history"], key=lambda e: str(e.get("created_at", "")))
    for entry in [*entries, *data["load"]]:
        summary = entry.get("metrics") or entry.get("total") or {}
        p95 = (summary.get("percentiles_ms") or {}).get("p95")
        if not isinstance(p95, int | float) or not math.isfinite(p95):
            continue
        verdict = entry.get("verdict") or (entry.get("regression") or {}).get("verdict")
        points.append((charts.profile_name(entry), str(entry.get("run_id", "?")), float(p95), verdict == "regressed"))
    return points


def _history(data: dict[str, Any]) -> str:
    out = '<section id="history"><h2>History</h2>'
    if not data["history"]:
        return out + '<p class="empty">no history</p></section>'
    points = history_points(data)
    if not points:
        return out + '<p class="empty">no history: the stored runs carry no p95</p></section>'
    regressed = [label for _, label, _, bad in points if bad]
    note = f"<p>Regressed: {escape(', '.join(regressed))}</p>" if regressed else "<p>No regression detected.</p>"
    return out + chart("history-p95", charts.history_chart(points)) + note + "</section>"
