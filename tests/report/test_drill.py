"""`stackcheck drill`: one chaos scenario as a DR drill record (HTML and Markdown)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stackcheck import cli
from stackcheck.report.drill import render_drill
from stackcheck.report.scenarios import SCENARIO_TESTS
from stackcheck.results import ResultsError
from tests.report.conftest import MakeRun, sample

REPO = Path(__file__).resolve().parents[2]


def test_scenario_table_matches_the_chaos_tests() -> None:
    found = {}
    for test in sorted((REPO / "chaos").glob("test_*.py")):
        for scenario in re.findall(r'experiment\("([a-z0-9-]+)"', test.read_text()):
            found[scenario] = str(test.relative_to(REPO))
    assert found == SCENARIO_TESTS


def test_drill_record_of_a_passed_scenario(make_run: MakeRun) -> None:
    run_dir = make_run("clean")
    html_path, md_path, met = render_drill(run_dir, "backend-kill", "alice")
    assert met
    html = html_path.read_text()
    assert "<h1>DR drill record: backend-kill</h1>" in html
    assert '<div class="verdict pass" id="verdict"><span class="word">PASS</span> objectives met' in html
    assert "<td>objective</td><td>RTO 5 s, RPO 0 s</td>" in html
    # every journal step with its wall-clock time, in order
    steps = re.findall(r'<tr><td class="num">(\d+)</td><td>(2026-11-22 [\d:.]+ UTC)</td>', html)
    assert [n for n, _ in steps] == [str(i) for i in range(1, 9)]
    assert steps[0][1] == "2026-11-22 04:37:57.382 UTC"
    assert "<td>fault injected</td><td>SIGKILL backend-1</td>" in html
    assert "RTO 0.250 s (objective 5 s)" in html
    assert "traffic during the kill: 2558 requests" in html
    assert html.count("<svg") == 2  # timeline and RTO bar
    assert "<td>operator</td><td>alice</td>" in html
    assert "<td>reviewer</td><td>______________________</td>" in html
    assert "<td>outcome accepted</td><td>[ ] yes    [ ] no</td>" in html
    md = md_path.read_text()
    assert md.startswith("# DR drill record: backend-kill\n")
    assert "- Outcome: **PASS**, objectives met" in md
    assert "| 4 | 2026-11-22 04:37:58.404 UTC | +1.022 s | fault injected | SIGKILL backend-1 |" in md
    assert "- Operator: alice" in md
    assert "- Reviewer: ______________________" in md
    assert "- Outcome accepted: [ ] yes  [ ] no" in md


def breached(name: str, scenario: str) -> list[dict[str, Any]]:
    chaos = sample(name)["chaos"]
    for exp in chaos:
        if exp["scenario"] == scenario:
            exp.update(passed=False, breaches=["RTO 7.250s > objective 5s"])
            exp["rto"]["rto_s"] = 7.25
    return chaos


def test_drill_record_of_a_breached_scenario(make_run: MakeRun) -> None:
    run_dir = make_run("failing", chaos=breached("failing", "redis-kill"))
    html_path, md_path, met = render_drill(run_dir, "redis-kill")
    assert not met
    html = html_path.read_text()
    assert '<span class="word">FAIL</span> objective breached\n<ol class="breaches"><li>RTO 7.250s' in html
    assert "RPO 0.000 s (objective none set); 189/191 writes acknowledged" in html
    assert "<td>operator</td><td>______________________</td>" in html
    assert "- Breach: RTO 7.250s &gt; objective 5s" in md_path.read_text()


def test_drill_without_the_scenario_is_a_clear_error(make_run: MakeRun) -> None:
    with pytest.raises(ResultsError, match="holds no result for scenario 'primary-kill'"):
        render_drill(make_run("clean"), "primary-kill")


@pytest.mark.parametrize(("scenario", "code"), [("backend-kill", 0), ("redis-kill", 1)])
def test_drill_command_runs_the_scenario_and_exits_on_breach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scenario: str, code: int
) -> None:
    """The pytest run is faked: it writes what the chaos test would (results.json) into --report-dir."""
    calls: list[list[str]] = []
    chaos = breached("failing", "redis-kill") + sample("clean")["chaos"]

    def fake_pytest(args: list[str], cwd: Path) -> int:
        calls.append(args)
        run_dir = Path(args[args.index("--report-dir") + 1])
        run_dir.mkdir(parents=True)
        data = {**sample("clean"), "run_id": run_dir.name, "chaos": chaos}
        (run_dir / "results.json").write_text(json.dumps(data))
        return code

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.interrupt, "run_child", fake_pytest)
    assert cli.main(["drill", scenario, "--operator", "bob"]) == code
    (args,) = calls
    assert args[1:3] == ["-m", "pytest"]
    assert Path(args[3]).name == Path(SCENARIO_TESTS[scenario]).name
    assert Path(args[3]).is_file()
    assert {"--report-dir", "-c"} <= set(args)
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert run_dir.name.endswith(f"-drill-{scenario}")
    assert "<td>operator</td><td>bob</td>" in (run_dir / "drill.html").read_text()
    assert (run_dir / "drill.md").exists()


def test_drill_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["drill", "datacenter-fire"])
    assert exit_.value.code == 2
    assert "invalid choice: 'datacenter-fire'" in capsys.readouterr().err
