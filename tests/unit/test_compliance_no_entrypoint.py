"""A booted stack with no HTTP entrypoint (a database cluster, say): every rule that aims at the
edge is NOT EVALUATED as "not applicable", naming the missing entrypoint; the rules that read
containers still run on its containers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stackcheck.compliance import runner
from stackcheck.compliance.model import Area, Outcome, Policy
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import DEFAULT_STACK
from tests.unit.compliance_fakes import FakeStack

# A policy whose rules are all configured (routes, paths, links): what is missing is the edge.
POLICY = Policy.load(DEFAULT_STACK.parent / "policy.toml")
HTTP_RULES = [r for area in (Area.HEADERS, Area.TLS, Area.RATE_LIMITS) for r in POLICY.area(area)]
HTTP_RULES = [r for r in HTTP_RULES if r.id != "tls-postgres"] + [POLICY.rules["health-liveness"]]


def _stack() -> FakeStack:
    spec = SimpleNamespace(name="cluster", entry_service=None, services={}, links={}, health_path="/")
    return FakeStack(spec=spec)


@pytest.mark.parametrize("rule", HTTP_RULES, ids=[r.id for r in HTTP_RULES])
def test_an_edge_rule_without_an_entrypoint_is_not_applicable(rule) -> None:  # type: ignore[no-untyped-def]
    results = runner.evaluate(rule, CheckContext(None, _stack(), POLICY))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == [Outcome.NOT_EVALUATED], [r.line() for r in results]
    assert "not applicable: the stack declares no HTTP entrypoint" in results[0].evidence
    assert results[0].subject == "stack cluster"


def test_a_container_rule_still_runs_on_the_containers() -> None:
    [result] = runner.evaluate(POLICY.rules["containers-non-root"], CheckContext(None, _stack(), POLICY))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED  # no container here: judged as empty, not as "no entrypoint"
    assert "entrypoint" not in result.evidence
