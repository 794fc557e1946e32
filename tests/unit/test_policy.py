"""Policy files: the default loads, overrides merge rule by rule, and every bad input (also
fuzzed with hypothesis) is one PolicyError naming the file, the key and the fix."""

from __future__ import annotations

import contextlib
import dataclasses
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackcheck import stackfile
from stackcheck.compliance import runner
from stackcheck.compliance.model import DEFAULT_POLICY, Area, Outcome, Policy, Result, Severity
from stackcheck.errors import PolicyError
from stackcheck.stack import DEFAULT_STACK
from stackcheck.target import HttpTarget


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "override.toml"
    path.write_text(text)
    return path


def test_default_policy_has_a_check_for_every_rule() -> None:
    policy = Policy.load()
    assert {area for area in Area} == {r.area for r in policy.rules.values()}
    assert set(policy.rules) <= set(runner.REGISTRY), "a rule without a check could never fail"
    assert policy.rules["ratelimit-api"].param("rate") == 10.0
    assert policy.fail_on is Severity.HIGH


def test_an_override_changes_only_what_it_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[policy]\nfail_on = "medium"\n'
        '[rules.ratelimit-api]\nrate = 50\nseverity = "low"\n'
        '[rules.tls-alpn-h2]\nenabled = false\nreason = "the edge is HTTP/1.1 only by design"\n',
    )
    policy = Policy.load(path)
    rule = policy.rules["ratelimit-api"]
    assert (rule.param("rate"), rule.severity, rule.param("burst")) == (50, Severity.LOW, 20)
    assert not policy.rules["tls-alpn-h2"].enabled
    assert policy.disabled == {"tls-alpn-h2": "the edge is HTTP/1.1 only by design"}
    assert policy.fail_on is Severity.MEDIUM
    assert policy.source == (DEFAULT_POLICY, path)


@pytest.mark.parametrize(
    ("text", "message", "fix"),
    [
        ("[rules.no-such-rule]\nseverity = 'low'\n", r"\[rules\.no-such-rule\] is not a rule", "headers-hsts"),
        ("[rules.ratelimit-api]\nrate = 'fast'\n", r"\[rules\.ratelimit-api\.rate\] must be float, not str", "10.0"),
        ("[rules.ratelimit-api]\nburst = true\n", r"\[rules\.ratelimit-api\.burst\] must be int, not bool", "20"),
        ("[rules.ratelimit-api]\nsevrity = 'low'\n", r"\[rules\.ratelimit-api\.sevrity\] is not a setting", "severity"),
        (
            "[rules.headers-hsts]\nseverity = 'urgent'\n",
            r"\[rules\.headers-hsts\.severity\] 'urgent' is not a severity",
            "critical",
        ),
        ("[policy]\nfail_on = 'never'\n", r"\[policy\.fail_on\] 'never' is not a severity", "high"),
        ("[polcy]\n", r"\[polcy\] is not a known table", "[rules.ID]"),
        ("[http]\nroutes = 'everything'\n", r"\[http\.routes\] must be list, not str", "routes"),
        ("[rules\n", "not valid TOML", "syntax"),
    ],
)
def test_each_bad_override_is_one_clear_error(tmp_path: Path, text: str, message: str, fix: str) -> None:
    with pytest.raises(PolicyError, match=message) as err:
        Policy.load(write(tmp_path, text))
    assert fix in err.value.fix


def test_a_missing_policy_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file") as err:
        Policy.load(tmp_path / "nope.toml")
    assert "--policy" in err.value.fix


def test_the_gate_counts_failures_at_or_above_the_threshold() -> None:
    policy = Policy.load()
    low, high = policy.rules["headers-xss-protection"], policy.rules["headers-hsts"]
    results = [
        Result(low, Outcome.FAIL, "/", "x"),
        Result(high, Outcome.PASS, "/", "ok"),
        Result(high, Outcome.ERROR, "/", "crash"),
    ]
    assert [r.rule.id for r in policy.breaches(results)] == ["headers-hsts"]
    assert len(policy.breaches(results, Severity.INFO)) == 2
    assert [r.evidence for r in policy.warnings(results)] == ["x"]  # below the gate, still shown


def test_not_evaluated_counts_like_a_failure_error_at_any_severity() -> None:
    policy = Policy.load()
    low, high = policy.rules["headers-xss-protection"], policy.rules["headers-hsts"]
    results = [
        Result(high, Outcome.NOT_EVALUATED, "policy", "no route matched"),
        Result(low, Outcome.NOT_EVALUATED, "policy", "nothing"),
        Result(low, Outcome.ERROR, "/", "crash"),
        Result(high, Outcome.EXEMPT, "web", "exempt by policy"),
    ]
    assert [r.evidence for r in policy.breaches(results)] == ["no route matched", "crash"]
    assert [r.evidence for r in policy.warnings(results)] == ["nothing"]


toml_scalars = st.one_of(
    st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)
)
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3))
rule_ids = st.sampled_from([*tomllib.loads(DEFAULT_POLICY.read_text())["rules"], "unknown-rule"])
keys = st.sampled_from(["severity", "enabled", "rate", "burst", "path", "min_days", "exempt", "links", "nonsense"])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(st.tuples(rule_ids, keys, toml_values), max_size=4),
    fail_on=st.one_of(st.none(), st.text(max_size=8)),
)
def test_fuzzed_overrides_load_or_raise_a_policy_error(tmp_path: Path, entries: list[Any], fail_on: str | None) -> None:
    lines = [f"[policy]\nfail_on = {_toml(fail_on)}"] if fail_on is not None else []
    for rule_id, key, value in entries:
        lines.append(f'[rules."{rule_id}"]\n{key} = {_toml(value)}')
    path = write(tmp_path, "\n".join(lines) + "\n")
    error = None
    try:
        Policy.load(path)
    except PolicyError as err:
        error = err
    if error is not None:
        assert str(path) in error.problem
        assert error.fix


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_exception(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    with contextlib.suppress(PolicyError):
        Policy.load(path)


def test_a_rule_is_disabled_only_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"\[rules.tls-alpn-h2\] is disabled without a reason") as info:
        Policy.load(write(tmp_path, "[rules.tls-alpn-h2]\nenabled = false\n"))
    assert 'add reason = "why it does not apply"' in info.value.fix


def test_the_disabled_table_names_any_check_with_its_reason(tmp_path: Path) -> None:
    policy = Policy.load(write(tmp_path, '[disabled]\nprimary-failover = "single-node staging: no replica"\n'))
    assert policy.disabled == {"primary-failover": "single-node staging: no replica"}
    with pytest.raises(PolicyError, match=r"\[disabled\.primary-failover\] must give the reason the check is disabled"):
        Policy.load(write(tmp_path, '[disabled]\nprimary-failover = ""\n'))


def test_layers_merge_in_order_default_then_stack_then_override(tmp_path: Path) -> None:
    """The stack's policy is merged over the default and --policy over both; source names each."""
    stack_policy = tmp_path / "stack-policy.toml"
    stack_policy.write_text('[http]\nroutes = ["/", "/app"]\n[rules.ratelimit-api]\npath = "/app"\nrate = 5\n')
    override = write(tmp_path, "[rules.ratelimit-api]\nrate = 7\n")
    policy = Policy.load(stack_policy, override)
    rule = policy.rules["ratelimit-api"]
    assert (rule.param("path"), rule.param("rate")) == ("/app", 7)
    assert policy.http.routes == ("/", "/app")
    assert policy.source == (DEFAULT_POLICY, stack_policy, override)
    assert Policy.load(None, override).source == (DEFAULT_POLICY, override)


def test_the_default_policy_names_no_route_of_an_application() -> None:
    """Routes, rate-limited paths and health links are the stack's (its policy gives them)."""
    policy = Policy.load()
    assert (policy.http.routes, policy.http.not_found_path, policy.http.rate_limited_path) == (
        ("/",),
        "/stackcheck-no-such-route",
        None,
    )
    assert "prompt" not in DEFAULT_POLICY.read_text().lower()
    for rule_id, key in [
        ("ratelimit-api", "path"),
        ("ratelimit-auth", "path"),
        ("ratelimit-health-unlimited", "paths"),
        ("health-liveness", "path"),
        ("health-dependencies", "links"),
        ("containers-read-only-rootfs", "services"),
    ]:
        assert not policy.rules[rule_id].param(key), f"{rule_id}.{key} names a subject of some stack"


def test_the_reference_stack_names_its_policy_and_gets_its_routes_back() -> None:
    spec = stackfile.load(DEFAULT_STACK)
    assert spec.policy == DEFAULT_STACK.parent / "policy.toml"
    policy = runner.scoped_policy(spec, None)
    assert policy.http.rate_limited_path == "/api/prompt-cards"
    assert policy.rules["health-dependencies"].param("links")["backend->redis"] == "redis"
    assert policy.source == (DEFAULT_POLICY, spec.policy)


def test_an_external_target_disables_every_rule_that_needs_a_booted_stack() -> None:
    """Chosen scope, not a gap: DISABLED with the reason; HTTP/TLS, rate limits and liveness stay."""
    target = HttpTarget.external("https://staging.example.com")
    policy = runner.scoped_policy(None, None, target)
    reason = "not applicable: --target https://staging.example.com is an external deployment (nothing booted)"
    disabled = {rule_id for rule_id, why in policy.disabled.items() if why == reason}
    areas = {policy.rules[r].area for r in disabled}
    assert areas == {Area.CONTAINERS, Area.DATASTORES, Area.TLS, Area.HEALTH}
    assert {r for r in disabled if policy.rules[r].area in (Area.TLS, Area.HEALTH)} == {
        "tls-postgres",
        "health-dependencies",
    }
    assert not {r.id for r in policy.area(Area.HEADERS) + policy.area(Area.RATE_LIMITS)} & disabled
    assert "health-liveness" not in disabled
    ctx = runner.CheckContext(target, None, policy)
    results = runner.run(ctx, [Area.CONTAINERS, Area.DATASTORES])
    assert {(r.outcome, r.evidence) for r in results} == {(Outcome.DISABLED, reason)}
    # Evaluated directly (no scoped policy), such a rule is DISABLED all the same, never run.
    [direct] = runner.evaluate(Policy.load().rules["pg-ssl"], runner.CheckContext(target, None, Policy.load()))
    assert (direct.outcome, direct.evidence) == (Outcome.DISABLED, reason)


def test_a_stack_files_disabled_table_disables_rules_in_the_run() -> None:
    spec = SimpleNamespace(policy=None, disabled={"tls-alpn-h2": "HTTP/1.1 only by design"}, services={})
    policy = runner.scoped_policy(spec, None)  # type: ignore[arg-type]
    [result] = runner.run(runner.CheckContext(None, None, only(policy, "tls-alpn-h2")))  # type: ignore[arg-type]
    assert (result.outcome, result.evidence) == (Outcome.DISABLED, "HTTP/1.1 only by design")


def only(policy: Policy, rule_id: str) -> Policy:
    return dataclasses.replace(policy, rules={rule_id: policy.rules[rule_id]})
