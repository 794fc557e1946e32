"""ratelimit-health-unlimited without a stack: a health route passes only when every probe of
the burst answers 2xx in time; a 503, 404, timeout or reset fails with what was seen."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from stackcheck.compliance import rate_limits, runner
from stackcheck.compliance.model import Outcome, Policy
from stackcheck.compliance.rate_limits import Shot, health_problem
from stackcheck.compliance.runner import CheckContext
from tests.unit.compliance_fakes import MockTarget

POLICY = Policy.load()
RULE = POLICY.rules["ratelimit-health-unlimited"]


def shots(*answers: int | str, elapsed: float = 0.01) -> list[Shot]:
    return [
        Shot(i * 0.025, a, elapsed) if isinstance(a, int) else Shot(i * 0.025, 0, elapsed, a)
        for i, a in enumerate(answers)
    ]


def test_all_2xx_in_time_is_healthy() -> None:
    assert health_problem(shots(*[200] * 79, 204), timeout=2.0) is None


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (shots(*[503] * 80), "80 of 80 probes did not answer 2xx within 2s (503: 80)"),
        (shots(*[404] * 80), "80 of 80 probes did not answer 2xx within 2s (404: 80)"),
        (shots(*[200] * 70, *["timeout"] * 10), "10 of 80 probes did not answer 2xx within 2s (200: 70, timeout: 10)"),
        (shots(*["reset"] * 80), "80 of 80 probes did not answer 2xx within 2s (reset: 80)"),
        (shots(*[200] * 30, *[429] * 50), "50 of 80 probes did not answer 2xx within 2s (200: 30, 429: 50)"),
        (shots(200, 301), "1 of 2 probes did not answer 2xx within 2s (200: 1, 301: 1)"),
        (shots(200, 200, elapsed=2.5), "2 of 2 probes did not answer 2xx within 2s (200 late: 2)"),
        ([], "no probe was sent (offered_rate * seconds < 1)"),
    ],
)
def test_anything_but_2xx_in_time_fails_with_counts(seen: list[Shot], expected: str) -> None:
    assert health_problem(seen, timeout=2.0) == expected


def route(request: httpx.Request) -> httpx.Response:
    """A health surface with one healthy route and the ways a health route goes wrong."""
    path = request.url.path
    if path == "/timeout":
        raise httpx.ReadTimeout("timed out", request=request)
    if path == "/reset":  # what httpx raises for nginx `return 444` (closed without an answer)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    return httpx.Response({"/ok": 200, "/503": 503, "/404": 404}[path])


def test_the_registered_rule_fails_every_unhealthy_route_and_passes_the_healthy_one() -> None:
    """No 429 anywhere: the old rule (counting 429 only) passed all five routes."""
    paths = ["/ok", "/503", "/404", "/timeout", "/reset"]
    rule = dataclasses.replace(RULE, params={**RULE.params, "paths": paths, "offered_rate": 40.0, "seconds": 0.25})
    results = runner.evaluate(rule, CheckContext(MockTarget(route), None, POLICY))
    by_path = {r.subject: r for r in results}
    assert [r.outcome for r in results] == [Outcome.PASS] + [Outcome.FAIL] * 4, runner.table(results)
    assert by_path["GET /ok"].evidence.startswith("10 probes at 40 r/s, all 2xx within 2s")
    for path, seen in (("/503", "503: 10"), ("/404", "404: 10"), ("/timeout", "timeout: 10"), ("/reset", "reset: 10")):
        assert by_path[f"GET {path}"].evidence == f"10 of 10 probes did not answer 2xx within 2s ({seen})"


def test_failures_are_named_by_kind() -> None:
    request = httpx.Request("GET", "https://edge.invalid/")
    assert rate_limits._failure(httpx.ConnectTimeout("t", request=request)) == "timeout"
    assert rate_limits._failure(httpx.ReadError("reset by peer", request=request)) == "reset"
    assert rate_limits._failure(httpx.ConnectError("refused", request=request)) == "ConnectError"


def test_no_health_route_in_the_rule_evaluates_nothing() -> None:
    rule = dataclasses.replace(RULE, params={**RULE.params, "paths": []})
    [result] = runner.evaluate(rule, CheckContext(MockTarget(route), None, POLICY))
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence.startswith("not applicable: the rule lists no health route (paths = [])")
    assert '[disabled] ratelimit-health-unlimited = "reason"' in result.evidence


@pytest.mark.parametrize("rule_id", ["ratelimit-api", "ratelimit-auth"])
def test_a_limit_rule_without_a_configured_path_is_not_applicable_and_sends_nothing(rule_id: str) -> None:
    """The default policy names no route of any application: the stack's policy gives the path."""
    rule = POLICY.rules[rule_id]
    assert rule.param("path") == ""
    target = MockTarget(lambda request: pytest.fail(f"nothing should be sent, got {request.url}"))
    [result] = runner.evaluate(rule, CheckContext(target, None, POLICY))
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence.startswith('not applicable: no rate-limited route is configured (path = "")')
    assert f"set [rules.{rule_id}] path" in result.evidence
    assert f"[disabled] {rule_id}" in result.evidence
