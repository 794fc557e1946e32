"""Unevaluated is not passed: product checks that skip, xfail, xpass or error are NOT EVALUATED
in results.json and fail the gate, unless the stack file or policy disables them by name with a
reason. Run in a separate pytest process with pytester, with the report plugin as the gate uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PLUGINS = (
    "stackcheck.fixtures.stack",
    "stackcheck.fixtures.compliance",
    "stackcheck.fixtures.chaos",
    "stackcheck.fixtures.load",
    "stackcheck.fixtures.report",
)
STACK = """
[stack]
name = "tiny"
[networks.edge]
[services.web]
image = "nginx"
networks = { edge = [] }
ports = [8080]
"""


# The policy scopes the Ollama and Prometheus rules to stacks that run them (only_with_images): on
# this stack they are DISABLED as not applicable, with the reason, and counted as disabled.
NOT_APPLICABLE = dict.fromkeys(
    ("ollama-origins", "ollama-image-pinned"),
    "not applicable: no service runs an image in ['ollama', 'ollama-tiny'] (the policy's only_with_images)",
) | dict.fromkeys(
    ("prometheus-rules", "prometheus-targets"),
    "not applicable: no service runs an image in ['prometheus'] (the policy's only_with_images)",
)


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    plugins = " ".join(f"-p {p}" for p in PLUGINS)
    pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider {plugins}\n")
    pytester.makefile(".toml", stack=STACK)
    return pytester


def gate(run: pytest.Pytester, *args: str) -> dict:  # type: ignore[type-arg]
    run.runpytest_subprocess("--stack", "stack.toml", "--report-dir", "out/run", str(run.path), *args)
    return json.loads(Path(run.path / "out/run/results.json").read_text())  # type: ignore[no-any-return]


def by_check(results: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["check"]: c for c in results["checks"]}


PRODUCT_TESTS = """
import pytest

def test_judged():
    pass

def test_skipped():
    pytest.skip("needs a replica")

@pytest.mark.xfail(reason="known hang", strict=False)
def test_xfailed():
    raise RuntimeError("Toxiproxy blocked")

@pytest.mark.xfail(reason="known hang", strict=False)
def test_xpassed():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("engine unreachable")

def test_errored(broken):
    pass
"""


def test_skip_xfail_xpass_and_setup_errors_are_not_evaluated_and_fail_the_gate(run: pytest.Pytester) -> None:
    run.mkdir("chaos")
    (run.path / "chaos" / "test_scenarios.py").write_text(PRODUCT_TESTS)
    results = gate(run)
    checks = by_check(results)
    assert checks["judged"]["status"] == "passed"
    assert checks["skipped"] == {
        "area": "chaos", "check": "skipped", "status": "not_evaluated", "severity": "high",
        "reason": "skipped: needs a replica",
    }  # fmt: skip
    assert checks["xfailed"]["status"] == "not_evaluated"
    assert checks["xfailed"]["reason"] == "xfailed (marked xfail: known hang)"
    assert checks["xpassed"]["status"] == "not_evaluated"
    assert checks["errored"]["status"] == "not_evaluated"
    assert "error before the check ran: RuntimeError: engine unreachable" in checks["errored"]["reason"]
    assert results["verdict"] == "fail"
    flagged = {b["check"]: b["message"] for b in results["breaches"]}
    assert set(flagged) == {"skipped", "xfailed", "xpassed", "errored"}
    assert all(m.startswith("NOT EVALUATED: ") for m in flagged.values())
    summary = (run.path / "out/run/summary.md").read_text()
    # 4 disabled: the two Ollama and two Prometheus rules of the policy's image scope
    assert "FAIL: 5 checks, 0 failed, 4 not evaluated, 4 disabled, 0 warnings" in summary


def test_a_check_disabled_by_name_with_a_reason_does_not_fail_the_gate(run: pytest.Pytester) -> None:
    run.mkdir("chaos")
    (run.path / "chaos" / "test_scenarios.py").write_text(
        "import pytest\ndef test_judged(): pass\ndef test_skipped(): pytest.skip('needs a replica')\n"
        "def test_not_run_at_all(): raise AssertionError('a disabled check must not run')\n"
    )
    stack = run.path / "stack.toml"
    stack.write_text(STACK + '[disabled]\nskipped = "staging has one database node"\n')
    policy = run.path / "policy.toml"
    policy.write_text('[disabled]\nnot-run-at-all = "covered by the quarterly drill"\n')
    results = gate(run, "--policy", str(policy))
    checks = by_check(results)
    assert checks["skipped"]["status"] == "disabled"
    assert checks["skipped"]["reason"] == "staging has one database node"
    assert checks["not-run-at-all"]["status"] == "disabled"
    assert results["verdict"] == "pass", results["breaches"]
    assert results["disabled"] == {
        "not-run-at-all": "covered by the quarterly drill",
        "skipped": "staging has one database node",
        **NOT_APPLICABLE,
    }
    html = (run.path / "out/run/index.html").read_text()
    assert "staging has one database node" in html
    assert "covered by the quarterly drill" in html


def test_a_failing_product_check_is_a_breach_by_its_name(run: pytest.Pytester) -> None:
    run.mkdir("load")
    (run.path / "load" / "test_mine.py").write_text("def test_latency_gate(): assert False, 'p95 too high'\n")
    results = gate(run)
    assert by_check(results)["latency-gate"]["status"] == "failed"
    assert results["breaches"][0]["check"] == "latency-gate"
    assert "p95 too high" in results["breaches"][0]["message"]


def test_a_disabled_rule_without_a_reason_is_one_clear_error(run: pytest.Pytester) -> None:
    policy = run.path / "policy.toml"
    policy.write_text("[rules.tls-alpn-h2]\nenabled = false\n")
    run.mkdir("suites")
    (run.path / "suites" / "test_tls.py").write_text(
        "from stackcheck.fixtures.compliance import test_rule  # noqa: F401\n"
        "from stackcheck.compliance.model import Area\n"
        "AREA = Area.TLS\n"
    )
    result = run.runpytest_subprocess("--stack", "stack.toml", "--policy", str(policy), "--collect-only", str(run.path))
    result.stdout.fnmatch_lines(["*[[]rules.tls-alpn-h2[]] is disabled without a reason*"])
    assert result.ret != 0


def test_an_area_whose_rules_are_all_disabled_is_not_a_check_of_its_own(run: pytest.Pytester) -> None:
    policy = run.path / "policy.toml"
    rules = ("ratelimit-api", "ratelimit-auth", "ratelimit-health-unlimited")
    policy.write_text("".join(f'[rules.{r}]\nenabled = false\nreason = "measured elsewhere"\n' for r in rules))
    run.mkdir("suites")
    (run.path / "suites" / "test_rate_limits.py").write_text(
        "from stackcheck.fixtures.compliance import test_rule  # noqa: F401\n"
        "from stackcheck.compliance.model import Area\n"
        "AREA = Area.RATE_LIMITS\n"
    )
    results = gate(run, "--policy", str(policy))
    assert results["checks"] == []
    assert results["verdict"] == "pass", results["breaches"]
    assert results["disabled"] == dict.fromkeys(rules, "measured elsewhere") | NOT_APPLICABLE
