"""index.html and summary.md from real sample runs: verdict, breaches first, tables, charts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stackcheck.load.report import validate
from stackcheck.report import render
from stackcheck.results import ResultsError, table
from tests.report.conftest import MakeRun, history_entries, sample


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def test_clean_run_renders_a_green_verdict(make_run: MakeRun) -> None:
    run_dir = make_run("clean")
    paths = render(run_dir)
    assert paths == [run_dir / "index.html", run_dir / "summary.md"]
    html = paths[0].read_text()
    assert '<div class="verdict pass" id="verdict"><span class="word">PASS</span>' in html
    assert 'class="verdict fail"' not in html
    assert "Header grade: <b>A+</b> (score 105, lowest of 6 responses" in html
    assert '<table class="summary">' in html
    assert "<td>compliance</td>" in html
    assert "<td>chaos</td>" in html
    assert "no load runs" in html
    assert "no history" in html
    assert "<link" not in html
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|@import", html)  # nothing fetched


def test_failing_run_lists_the_breach_first(make_run: MakeRun) -> None:
    html = render(make_run("failing"))[0].read_text()
    banner = html.index('<div class="verdict fail" id="verdict"><span class="word">FAIL</span> 1 breach')
    breach = html.index("<b>[high] compliance health-liveness</b>: GET /api/health: p95 1.9 ms &gt; 0.01 ms")
    assert banner < breach < html.index('<table class="summary">') < html.index('<table class="compliance')
    assert '<tr class="bad"><td>health-liveness</td><td>high</td><td>fail</td>' in html


def test_every_chart_is_a_non_empty_svg(make_run: MakeRun) -> None:
    run_dir = make_run("clean", load=[sample("load-run")], history=history_entries())
    html = render(run_dir)[0].read_text()
    charts = re.findall(r'<figure class="chart" data-chart="([a-z0-9-]+)">(.*?)</figure>', html, flags=re.S)
    # the load run, then per scenario a timeline and its RTO bar (their RPO is not measured), then history
    kinds = [kind for kind, _ in charts]
    assert kinds == ["load-latency", *["chaos-timeline", "chaos-recovery"] * 2, "history-p95"]
    for kind, body in charts:
        (svg,) = svgs(body)
        assert svg.count("<path") > 5, kind
        assert "<title>" not in svg or "</title>" in svg
    assert len(svgs(html)) == len(charts)
    assert "Latency over time: smoke (closed loop)" in html
    assert "objective p95 default, p95 create 40 ms" in html
    assert "Timeline: backend-kill" in html
    assert "no traffic recorded for this scenario" in html  # db-reset-peer carries no traffic
    assert "Recovery vs objectives: backend-kill" in html
    assert "p95 trend per load profile" in html
    assert "Regressed: 20261121T030000Z-load, 20261122T000200Z-load" in html


def test_svg_ids_do_not_collide(make_run: MakeRun) -> None:
    html = render(make_run("clean", load=[sample("load-run")]))[0].read_text()
    clip_ids = re.findall(r'<clipPath id="([^"]+)"', html)
    assert clip_ids
    assert len(clip_ids) == len(set(clip_ids))


def test_load_section_has_the_percentile_table(make_run: MakeRun) -> None:
    html = render(make_run("clean", load=[sample("load-run")]))[0].read_text()
    table = html[html.index('<table class="percentiles">') :]
    table = table[: table.index("</table>")]
    headers = re.findall(r"<th>(.*?)</th>", table)
    assert headers == [
        "scope", "requests", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms", "rps", "errors",
    ]  # fmt: skip
    assert '<td>total</td><td class="num">1700</td><td class="num">4.2</td>' in table
    assert '<td class="num">14 (0.8%)</td>' in table
    assert "create p95_ms: measured 59.041, objective 40.0" in html
    assert "Regression check: <b>regressed</b>" in html


def test_text_is_escaped(make_run: MakeRun) -> None:
    breach = {"area": "tests", "check": "t<1>", "severity": "high", "message": "<script>alert(1)</script>"}
    html = render(make_run("clean", breaches=[breach], verdict="fail"))[0].read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "t&lt;1&gt;" in html


def test_summary_md_for_a_pull_request(make_run: MakeRun) -> None:
    run_dir = make_run("failing")
    (run_dir / "junit.xml").write_text("<testsuites/>")
    text = render(run_dir)[1].read_text()
    lines = text.splitlines()
    assert lines[0] == "## \u274c stackcheck FAIL: run `20261122T000100Z-failing`"
    first_breach = lines.index(
        "1. **[high] compliance health-liveness**: GET /api/health: p95 1.9 ms &gt; 0.01 ms: 30 requests: "
        "p95 1.9 ms (max 2.1 ms), statuses [200]"
    )
    header = "| area | checks | passed | failed | not eval | disabled | warnings | worst finding |"
    assert first_breach < lines.index(header)
    assert "| chaos | 1 | 1 | 0 | 0 | 0 | 0 | - |" in lines
    assert "**FAIL: 12 checks, 1 failed, 0 not evaluated, 0 disabled, 0 warnings**" in lines
    assert f"Report: [index.html](index.html) (`{run_dir / 'index.html'}`)" in lines
    assert f"JUnit: [junit.xml](junit.xml) (`{run_dir / 'junit.xml'}`)" in lines


def test_summary_md_for_a_clean_run(make_run: MakeRun) -> None:
    text = render(make_run("clean", load=[sample("load-run")]))[1].read_text()
    assert text.startswith("## \u2705 stackcheck PASS: run `20261122T000000Z-sample`\n\nNo objective breached")
    assert "Header grade: **A+** (score 105, lowest of 6 responses; worst on " in text
    assert "| smoke | 4.2 | 17.4 | 32.2 | 73.4 | 130.6 | 56.7 | 14 |" in text
    assert "| backend-kill | PASS | RTO 0.250 s (objective 5 s)" in text
    assert "junit.xml" not in text  # none written: no dead link


def test_markdown_cells_cannot_break_the_table(make_run: MakeRun) -> None:
    breach = {"area": "tests", "check": "a|b", "severity": "high", "message": "line one\nline | two"}
    text = render(make_run("clean", breaches=[breach], verdict="fail"))[1].read_text()
    assert "| tests | 21 | 21 | 0 | 0 | 0 | 0 | [high] a\\|b: line one line \\| two |" in text  # its own counts
    assert "[high] a\\|b: line one line \\| two" in text


def test_load_sample_is_a_current_load_report() -> None:
    """The load sample must stay what stackcheck.load writes (plus intervals and objectives)."""
    validate(sample("load-run"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checks": [{"check": "x"}]}, r"an entry is malformed \(KeyError"),
        ({"compliance": ["not a dict"]}, r"an entry is malformed \(AttributeError"),
    ],
)
def test_a_damaged_entry_is_a_results_error(make_run: MakeRun, change: dict[str, object], message: str) -> None:
    run_dir = make_run("clean", **change)
    with pytest.raises(ResultsError, match=message) as err:
        render(run_dir)
    assert err.value.fix == "the file is damaged; run the gate again"
    assert not (run_dir / "index.html").exists()


def test_render_reads_only_results_json(make_run: MakeRun, tmp_path: Path) -> None:
    """Re-rendering a run gives the same page: everything comes from results.json."""
    run_dir = make_run("failing")
    first = render(run_dir)[0].read_text()
    data = json.loads((run_dir / "results.json").read_text())
    copy = tmp_path / "elsewhere" / data["run_id"]
    copy.mkdir(parents=True)
    (copy / "results.json").write_text(json.dumps(data))
    assert render(copy)[0].read_text() == first


def test_not_evaluated_disabled_and_warnings_show_in_every_output(make_run: MakeRun) -> None:
    """The table, summary.md and the HTML name each unjudged check with its reason and count warnings."""
    checks = [
        {"area": "compliance", "check": "headers-hsts", "status": "passed", "severity": "high", "reason": ""},
        {"area": "compliance", "check": "ds-postgres", "status": "not_evaluated", "severity": "high",
         "reason": "no service runs an image in ['postgres']"},
        {"area": "chaos", "check": "primary-failover", "status": "disabled", "severity": "high",
         "reason": "no replica in this stack"},
    ]  # fmt: skip
    breach = {"area": "compliance", "check": "ds-postgres", "severity": "high",
              "message": "NOT EVALUATED: no service runs an image in ['postgres']"}  # fmt: skip
    warning = {"area": "compliance", "check": "headers-nosniff", "severity": "medium", "message": "/: missing"}
    run_dir = make_run(
        "clean", checks=checks, breaches=[breach], warnings=[warning], verdict="fail",
        disabled={"primary-failover": "no replica in this stack", "tls-alpn-h2": "HTTP/1.1 only"},
    )  # fmt: skip
    data = json.loads((run_dir / "results.json").read_text())
    line = "FAIL: 3 checks, 0 failed, 1 not evaluated, 1 disabled, 1 warning"
    text = table(data)
    assert line in text
    assert "NOT EVALUATED compliance ds-postgres: no service runs an image in ['postgres']" in text
    assert "DISABLED chaos primary-failover: no replica in this stack" in text
    assert "DISABLED tls-alpn-h2: HTTP/1.1 only" in text
    assert "WARNING [medium] compliance headers-nosniff: /: missing" in text
    html, md = (p.read_text() for p in render(run_dir))
    for out in (html, md):
        assert line in out
        assert (
            "no service runs an image in [&#x27;postgres&#x27;]" in out
            or "no service runs an image in ['postgres']" in out
        )
        assert "no replica in this stack" in out
        assert "HTTP/1.1 only" in out
        assert "headers-nosniff" in out
    assert "<td>NOT EVALUATED</td>" in html


def test_the_two_header_scores_are_named_in_the_page_and_summary(make_run: MakeRun) -> None:
    evidence = (
        "gate worst-route >= 90: Observatory score 115 grade A+ on GET https://localhost/ -> 200 [csp: pass 0]; "
        "worst-route score 30 grade D on error 404 (/nope) [x-frame-options: fail -20] of 3 responses"
    )
    entry = {"rule": "headers-grade", "area": "headers", "severity": "medium", "description": "grade",
             "outcome": "fail", "subject": "https://localhost", "evidence": evidence}  # fmt: skip
    html, md = (p.read_text() for p in render(make_run("clean", compliance=[entry])))
    assert (
        "Header scores: Observatory score <b>A+</b> 115 on GET https://localhost/ -&gt; 200; "
        "worst-route score <b>D</b> 30 on error 404 (/nope)" in html
    )
    assert (
        "Header scores: Observatory score **A+** 115 on GET https://localhost/ -&gt; 200; worst-route score **D** 30"
        in md
    )
