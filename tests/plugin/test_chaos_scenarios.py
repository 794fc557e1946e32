"""The chaos suite is one generic test per [scenarios.NAME] of the stack file: the test id and
the check's name are the scenario's, ``profile = "full"`` marks it slow (the smoke gate leaves
it out), and a stack file without scenarios gets one NOT EVALUATED check, never a silent pass.
Run in a separate pytest process with pytester, with the plugins as the gate uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackcheck import resources
from tests.plugin.test_not_evaluated import PLUGINS, STACK

SCENARIOS = """
[stack]
name = "tiny"
proxy = "toxiproxy"
[networks.edge]
[services.web]
image = "nginx"
networks = { edge = [] }
ports = [8080]
[services.toxiproxy]
image = "toxiproxy"
networks = { edge = [] }
[links."toxiproxy->web"]
upstream = "web:8080"
listen = 18080
[workloads.home]
path = "/"
[scenarios.web-stop]
fault = "stop"
target = "web"
probe = "home"
[scenarios.web-slow]
fault = "latency"
target = "toxiproxy->web"
params = { ms = 100 }
profile = "full"
traffic = "home"
verify = { during_statuses = [200] }
[objectives.chaos.web-stop]
rto_s = 5
"""


@pytest.fixture
def run(pytester: pytest.Pytester) -> pytest.Pytester:
    plugins = " ".join(f"-p {p}" for p in PLUGINS)
    pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider {plugins}\n")
    pytester.mkdir("chaos")
    suite = resources.product_suites()["chaos"] / "test_scenarios.py"
    (pytester.path / "chaos" / "test_scenarios.py").write_text(suite.read_text())
    return pytester


def test_one_test_per_scenario_named_by_it_and_full_ones_are_slow(run: pytest.Pytester) -> None:
    (run.path / "stack.toml").write_text(SCENARIOS)
    every = run.runpytest_subprocess("--stack", "stack.toml", "--collect-only", "-q", "chaos")
    assert "chaos/test_scenarios.py::test_scenario[web-stop]" in every.outlines
    assert "chaos/test_scenarios.py::test_scenario[web-slow]" in every.outlines
    smoke = run.runpytest_subprocess(
        "--stack", "stack.toml", "--collect-only", "-q", "-m", "chaos and not slow", "chaos"
    )
    assert "chaos/test_scenarios.py::test_scenario[web-stop]" in smoke.outlines
    assert not [line for line in smoke.outlines if "web-slow" in line]


def test_a_stack_without_scenarios_is_one_not_evaluated_check(run: pytest.Pytester) -> None:
    (run.path / "stack.toml").write_text(STACK)
    run.runpytest_subprocess("--stack", "stack.toml", "--report-dir", "out/run", "chaos")
    results = json.loads(Path(run.path / "out/run/results.json").read_text())
    assert results["checks"] == [
        {
            "area": "chaos", "check": "chaos-scenarios", "status": "not_evaluated", "severity": "high",
            "reason": "skipped: the stack file declares no [scenarios]",
        }
    ]  # fmt: skip
    assert results["verdict"] == "fail"


def test_a_disabled_scenario_is_disabled_by_its_name(run: pytest.Pytester) -> None:
    (run.path / "stack.toml").write_text(SCENARIOS + '[disabled]\nweb-stop = "the edge has one replica"\n')
    run.runpytest_subprocess("--stack", "stack.toml", "--report-dir", "out/run", "-m", "not slow", "chaos")
    results = json.loads(Path(run.path / "out/run/results.json").read_text())
    assert [(c["check"], c["status"], c["reason"]) for c in results["checks"]] == [
        ("web-stop", "disabled", "the edge has one replica")
    ]


def test_a_broken_scenario_table_is_the_stack_files_error(run: pytest.Pytester) -> None:
    (run.path / "stack.toml").write_text(SCENARIOS.replace('fault = "stop"', 'fault = "meteor"'))
    result = run.runpytest_subprocess("--stack", "stack.toml", "--collect-only", "chaos")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*[[]scenarios.web-stop.fault[]] 'meteor' is not a fault*"])
