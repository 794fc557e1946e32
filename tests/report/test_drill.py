"""`stackcheck drill`: one chaos scenario as a DR drill record (HTML and Markdown)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stackcheck import cli
from stackcheck.load.history import History
from stackcheck.report.drill import render_drill
from stackcheck.results import ResultsError
from tests.report.conftest import MakeRun, sample


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
    assert "<td>outcome accepted</td><td>[ ] yes  [ ] no</td>" in html
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


@pytest.fixture(autouse=True)
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The drill's engine check and image build are faked too (these tests run without Docker):
    the stack files it built for."""
    stacks: list[str] = []
    monkeypatch.setattr(cli.engine, "ensure_engine", lambda **_: None)
    monkeypatch.setattr(cli, "_build_needed", lambda stack, offline: stacks.append(stack))
    return stacks


@pytest.mark.parametrize(("scenario", "code"), [("backend-kill", 0), ("redis-kill", 1)])
def test_drill_command_runs_the_scenario_and_exits_on_breach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scenario: str, code: int, built: list[str]
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
    assert len(built) == 1, "a drill builds its stack's images first, as the gate does"
    (args,) = calls
    assert args[1:3] == ["-m", "pytest"]
    test, selected = args[3].split("::")
    assert Path(test).name == "test_scenarios.py"
    assert Path(test).is_file()
    assert selected == f"test_scenario[{scenario}]"  # the one scenario: its parametrize id
    assert {"--report-dir", "-c"} <= set(args)
    (run_dir,) = (p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    assert (tmp_path / "reports" / "history.sqlite").is_file()  # the drill went into the history
    assert run_dir.name.endswith(f"-drill-{scenario}")
    assert "<td>operator</td><td>bob</td>" in (run_dir / "drill.html").read_text()
    assert (run_dir / "drill.md").exists()


def test_drill_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["drill", "datacenter-fire"]) == 2
    err = capsys.readouterr().err
    assert "declares no drill or scenario 'datacenter-fire'" in err
    assert (
        "fix: drill one of: backend-kill, primary-kill, redis-kill, db-latency, db-reset-peer, replica-partition" in err
    )


def test_drill_takes_its_scenarios_from_the_stack_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another stack's scenario names, not the reference stack's: validated against --stack."""
    stack = tmp_path / "stack.toml"
    stack.write_text(
        '[stack]\nname = "tiny"\nproxy = "toxiproxy"\n[networks.edge]\n'
        '[services.web]\nimage = "nginx"\nnetworks = { edge = [] }\n'
        '[services.toxiproxy]\nimage = "toxiproxy"\nnetworks = { edge = [] }\n'
        '[links."toxiproxy->web"]\nupstream = "web:8080"\nlisten = 18080\n'
        '[scenarios.web-stop]\nfault = "stop"\ntarget = "web"\nverify = { healthy = true }\n'
    )
    calls: list[list[str]] = []

    def fake_pytest(args: list[str], cwd: Path) -> int:
        calls.append(args)
        return 1  # a run that wrote no results.json

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.interrupt, "run_child", fake_pytest)
    assert cli.main(["drill", "backend-kill", "--stack", str(stack)]) == 2
    assert "fix: drill one of: web-stop" in capsys.readouterr().err
    assert not calls
    assert cli.main(["drill", "web-stop", "--stack", str(stack)]) == 2  # runs; no results to make a record of
    assert calls[0][3].endswith("test_scenarios.py::test_scenario[web-stop]")
    assert "no results at" in capsys.readouterr().err


# -- drill names and the history ----------------------------------------------------------------

TINY = (
    '[stack]\nname = "tiny"\nproxy = "toxiproxy"\n[networks.edge]\n'
    '[services.web]\nimage = "nginx"\nnetworks = { edge = [] }\n'
    '[services.toxiproxy]\nimage = "toxiproxy"\nnetworks = { edge = [] }\n'
    '[links."toxiproxy->web"]\nupstream = "web:8080"\nlisten = 18080\n'
)


def test_a_drill_name_runs_its_scenario_and_the_history_shows_earlier_drills(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`stackcheck drill q1` runs the scenario whose drill is q1; each run is appended to the history
    and the next record lists it (RTO/RPO against objectives, verdict, operator), oldest first."""
    stack = tmp_path / "stack.toml"
    stack.write_text(
        TINY + '[scenarios.web-stop]\nfault = "stop"\ntarget = "web"\ndrill = "q1"\nverify = { healthy = true }\n'
    )
    quarter = 91 * 86400.0
    later = [
        {**exp, "events": [{**e, "wall": e["wall"] + quarter} for e in exp["events"]]}
        for exp in sample("clean")["chaos"]
    ]
    outcomes = iter([breached("failing", "redis-kill"), later])  # a failed drill, and one a quarter later

    def fake_pytest(args: list[str], cwd: Path) -> int:
        assert args[3].endswith("test_scenarios.py::test_scenario[web-stop]")
        run_dir = Path(args[args.index("--report-dir") + 1])
        run_dir.mkdir(parents=True)
        chaos = [{**exp, "scenario": "web-stop"} for exp in next(outcomes)[:1]]
        (run_dir / "results.json").write_text(json.dumps({**sample("clean"), "run_id": run_dir.name, "chaos": chaos}))
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.interrupt, "run_child", fake_pytest)
    assert cli.main(["drill", "q1", "--stack", str(stack), "--operator", "alice"]) == 1  # the first run breached
    assert cli.main(["drill", "q1", "--stack", str(stack), "--operator", "bob"]) == 0
    records = History(tmp_path / "reports" / "history.sqlite").drills("q1", "stacks/promptcard/stack.toml")
    first, second = (tmp_path / "reports" / r.run_id for r in records)  # in the order they ran
    assert "none: this is the first run of this drill in the history" in (first / "drill.md").read_text()
    md = (second / "drill.md").read_text()
    assert "1 earlier run(s) of drill q1 on this stack in the history, oldest first" in md
    assert (
        f"| {first.name} | 2026-11-22 04:38:40.306 UTC | 7.250 s | 5 s | 0.000 s | none set | 0 / 189 "
        "| FAIL: RTO 7.250s &gt; objective 5s | alice | - | - | - | - |"
    ) in md
    html = (second / "drill.html").read_text()
    assert '<table class="drill-history">' in html
    assert '<tr class="bad">' in html
    assert [(r.run_id, r.passed, r.operator, r.scenario) for r in records] == [
        (first.name, False, "alice", "web-stop"),
        (second.name, True, "bob", "web-stop"),
    ]
    assert records[0].breaches == ("RTO 7.250s > objective 5s",)
    assert (records[1].rto_s, records[1].rto_objective_s, records[1].rpo_objective_s) == (0.25, 5.0, 0.0)


def test_the_history_keeps_drills_apart_by_name_and_stack(tmp_path: Path, make_run: MakeRun) -> None:
    history = History(tmp_path / "h.sqlite")
    for run_id, drill in (("r1-q1", "q1"), ("r2-q3", "q3"), ("r3-q1", "q1")):
        render_drill(make_run("clean", run_id=run_id), "backend-kill", None, history, drill=drill)
    assert [r.run_id for r in history.drills("q1", "stacks/promptcard/stack.toml")] == ["r1-q1", "r3-q1"]
    assert [r.run_id for r in history.drills("q3", "stacks/promptcard/stack.toml")] == ["r2-q3"]
    assert history.drills("q1", "stacks/other/stack.toml") == []
    _, md, _ = render_drill(make_run("clean", run_id="r4-q1"), "backend-kill", None, None, drill="q1")
    assert "no history (--no-history)" in md.read_text()
    assert len(history.drills("q1", "stacks/promptcard/stack.toml")) == 2  # nothing added without a history


@pytest.mark.parametrize(
    ("scenarios", "message"),
    [
        ('[scenarios.a]\nfault = "stop"\ntarget = "web"\ndrill = "q1"\nverify = { healthy = true }\n'
         '[scenarios.b]\nfault = "stop"\ntarget = "web"\ndrill = "q1"\nverify = { healthy = true }\n',
         "[scenarios.b.drill] 'q1' is already the drill of [scenarios.a]"),
        ('[scenarios.a]\nfault = "stop"\ntarget = "web"\ndrill = "b"\nverify = { healthy = true }\n'
         '[scenarios.b]\nfault = "stop"\ntarget = "web"\nverify = { healthy = true }\n',
         "[scenarios.a.drill] 'b' is the name of another scenario"),
        ('[scenarios.a]\nfault = "stop"\ntarget = "web"\ndrill = "Q 1"\nverify = { healthy = true }\n',
         "[scenarios.a.drill] 'Q 1' is not a drill name"),
    ],
)  # fmt: skip
def test_a_drill_name_must_name_one_scenario(tmp_path: Path, scenarios: str, message: str) -> None:
    from stackcheck.errors import StackFileError
    from stackcheck.stackfile import load

    stack = tmp_path / "stack.toml"
    stack.write_text(TINY + scenarios)
    with pytest.raises(StackFileError, match=re.escape(message)):
        load(stack)
