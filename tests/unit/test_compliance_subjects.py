"""A rule whose subject list is empty evaluates nothing and says what matched nothing: every
check of the headers, containers, data store, health and rate-limit areas run in an empty world
(no container, no route, no health path, no link) is NOT_EVALUATED as "not applicable: ...",
naming what is missing and how to disable it, never an empty pass."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.compliance import runner
from stackcheck.compliance.model import Area, HttpSurface, Outcome, Policy, Rule
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import DEFAULT_STACK
from tests.unit.compliance_fakes import FakeStack, MockTarget, fake_handle

POLICY = Policy.load()
REFERENCE_POLICY = Policy.load(DEFAULT_STACK.parent / "policy.toml")
# Nothing to judge anywhere: the [http] surface is empty and list parameters are emptied.
EMPTY_POLICY = dataclasses.replace(POLICY, http=HttpSurface(routes=(), error_statuses=()))
EMPTIED = {"ratelimit-health-unlimited": {"paths": []}, "health-dependencies": {"links": {}}}
# These always judge exactly one subject they name themselves (a measured rate, a route's latency).
SINGLE_SUBJECT = {"ratelimit-api", "ratelimit-auth", "health-liveness"}
AREAS = (Area.HEADERS, Area.CONTAINERS, Area.DATASTORES, Area.HEALTH, Area.RATE_LIMITS)
RULES = [r for area in AREAS for r in POLICY.area(area) if r.id not in SINGLE_SUBJECT]

EXPECTED = {
    Area.HEADERS: "[http]",
    Area.CONTAINERS: "the stack has no container",
    Area.DATASTORES: "no service runs an image in [",
    Area.HEALTH: "the rule lists no link to cut (links = {})",
    Area.RATE_LIMITS: "the rule lists no health route (paths = [])",
}
# The default policy lists no service that must run read-only.
EXPECTED_RULE = {
    "containers-read-only-rootfs": "the rule lists no service (services = [])",
    # Container rules picked by image, like the data stores'.
    "ollama-origins": "no service runs an image in [",
    "ollama-image-pinned": "no service runs an image in [",
    "prometheus-rules": "no service runs an image in [",
    "prometheus-targets": "no service runs an image in [",
}


def emptied(rule: Rule) -> Rule:
    return dataclasses.replace(rule, params={**rule.params, **EMPTIED.get(rule.id, {})})


def no_request(request: Any) -> Any:
    pytest.fail(f"nothing should be sent in an empty world, got {request.url}")


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_an_empty_subject_list_is_not_evaluated_and_named(rule: Rule) -> None:
    ctx = CheckContext(MockTarget(no_request), FakeStack(), EMPTY_POLICY)  # type: ignore[arg-type]
    results = runner.evaluate(emptied(rule), ctx)
    assert [r.outcome for r in results] == [Outcome.NOT_EVALUATED], runner.table(results)
    assert results[0].evidence.startswith("not applicable: "), results[0].evidence
    assert EXPECTED_RULE.get(rule.id, EXPECTED[rule.area]) in results[0].evidence
    assert f'[disabled] {rule.id} = "reason" in the stack file or policy' in results[0].evidence


@pytest.mark.parametrize("rule", POLICY.area(Area.DATASTORES), ids=[r.id for r in POLICY.area(Area.DATASTORES)])
def test_a_data_store_rule_matching_no_running_image_names_the_images(rule: Rule) -> None:
    stack = FakeStack([fake_handle("web", image="nginx"), fake_handle("api", image="promptcard-api")])
    [result] = runner.evaluate(rule, CheckContext(MockTarget(no_request), stack, POLICY))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence == (
        f"not applicable: no service runs an image in {rule.param('images')}; "
        f'disable it: [disabled] {rule.id} = "reason" in the stack file or policy'
    )


def test_read_only_rootfs_judges_only_the_listed_services() -> None:
    """A container of an unlisted service is no subject (it used to pass as "not required")."""
    rule = REFERENCE_POLICY.rules["containers-read-only-rootfs"]
    stack = FakeStack([fake_handle("redis"), fake_handle("postgres")])
    [result] = runner.evaluate(rule, CheckContext(MockTarget(no_request), stack, REFERENCE_POLICY))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence.startswith(
        "not applicable: no container runs a service in ['nginx', 'backend', 'toxiproxy']"
    )


def test_every_container_exempt_is_exempt_not_a_pass() -> None:
    rule = POLICY.rules["containers-non-root"]
    rule = dataclasses.replace(rule, params={**rule.params, "exempt": ["toolbox"]})
    results = runner.evaluate(rule, CheckContext(MockTarget(no_request), FakeStack([fake_handle("toolbox")]), POLICY))  # type: ignore[arg-type]
    assert [r.outcome for r in results] == [Outcome.EXEMPT]


def test_redis_nobody_connects_to_has_no_application_user_to_judge() -> None:
    data = tomllib.loads(DEFAULT_STACK.read_text())
    data = {
        "stack": {"name": "store"},
        "secrets": data["secrets"],
        "networks": {"control": {}},
        "services": {"redis": {**copy.deepcopy(data["services"]["redis"]), "networks": {"control": []}}},
    }
    spec = stackfile.parse(data, DEFAULT_STACK)
    stack = FakeStack([fake_handle("redis", image="redis")], spec=spec)
    rule = POLICY.rules["redis-dangerous-commands"]
    [result] = runner.evaluate(rule, CheckContext(MockTarget(no_request), stack, POLICY))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED
    assert result.evidence.startswith("no service connects to redis (no redis:// URL naming it")
