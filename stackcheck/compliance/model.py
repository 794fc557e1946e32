"""Policy rules and their results.

A policy is data: the default (``policies/default.toml``), the stack's own policy merged over it
(``[stack] policy = "policy.toml"``), then ``--policy FILE`` over that. Each rule has an id, an
area, a severity, a description and typed parameters. A check turns a rule
into results, one per subject (a route, a container, a data store), each with evidence: what
was observed. The gate fails on any failed result at or above ``fail_on``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from stackcheck import resources, tomldata
from stackcheck.errors import PolicyError
from stackcheck.stackfile import disabled_checks
from stackcheck.tomldata import Reader

DEFAULT_POLICY = resources.default_policy()
ParamValue = bool | int | float | str | list[Any] | dict[str, Any]


class Severity(Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def __ge__(self, other: Severity) -> bool:
        return self.rank >= other.rank


class Area(Enum):
    HEADERS = "headers"
    TLS = "tls"
    CONTAINERS = "containers"
    RATE_LIMITS = "rate_limits"
    HEALTH = "health"
    DATASTORES = "datastores"


class Outcome(Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the check itself crashed or could not reach its subject: a failure at the gate
    # The check found nothing to judge (no subject matched, an external target without
    # containers): never a pass; the gate fails on it unless the check is disabled with a reason.
    NOT_EVALUATED = "not_evaluated"
    EXEMPT = "exempt"  # this subject is exempted by name in the policy (e.g. a container)
    DISABLED = "disabled"  # the rule is disabled by name with a written reason


@dataclass(frozen=True)
class Rule:
    id: str
    area: Area
    severity: Severity
    description: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    enabled: bool = True
    reason: str | None = None  # why it is disabled: required with enabled = false

    def param(self, name: str) -> Any:
        if name not in self.params:
            raise PolicyError(
                f"rule {self.id} has no parameter {name!r}", f"add `{name} = ...` under [rules.{self.id}]"
            )
        return self.params[name]


@dataclass(frozen=True)
class Result:
    rule: Rule
    outcome: Outcome
    subject: str  # what was checked: a route, a container, a data store
    evidence: str  # what was observed, in words a reviewer can verify

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.FAIL, Outcome.ERROR)

    def line(self) -> str:
        return f"{self.outcome.value.upper():<5} {self.subject}: {self.evidence}"


@dataclass(frozen=True)
class HttpSurface:
    """The responses header rules look at."""

    routes: tuple[str, ...] = ("/",)
    not_found_path: str = "/stackcheck-no-such-route"
    rate_limited_path: str | None = None
    error_statuses: tuple[int, ...] = (404,)


@dataclass(frozen=True)
class Policy:
    rules: Mapping[str, Rule]
    fail_on: Severity
    source: tuple[Path, ...]
    http: HttpSurface = HttpSurface()
    extra_disabled: Mapping[str, str] = field(default_factory=dict)  # the [disabled] table: check -> reason

    @property
    def disabled(self) -> dict[str, str]:
        """Every check switched off by name, with its reason: disabled rules and the [disabled] table."""
        rules = {r.id: r.reason or "" for r in self.rules.values() if not r.enabled}
        return rules | dict(self.extra_disabled)

    @classmethod
    def load(cls, *layers: str | Path | None, default: Path = DEFAULT_POLICY) -> Policy:
        """The default policy with each layer merged on top, rule by rule, in order (the stack's
        policy, then ``--policy``); a None layer is skipped."""
        policy = _layer(None, default)
        for layer in layers:
            if layer is not None:
                policy = _layer(policy, Path(layer))
        return policy

    def disabling(self, checks: Mapping[str, str]) -> Policy:
        """This policy with more checks disabled by name (check -> reason), e.g. a stack file's [disabled]."""
        return replace(self, extra_disabled={**self.extra_disabled, **checks})

    def area(self, area: Area) -> list[Rule]:
        return [r for r in self.rules.values() if r.area is area and r.enabled]

    def breaches(self, results: Iterable[Result], fail_on: Severity | None = None) -> list[Result]:
        """What fails the gate: an error at any severity (a check that could not run is never a
        pass); a failure or a NOT EVALUATED result at or above the threshold."""
        threshold = fail_on or self.fail_on
        return [r for r in results if r.outcome is Outcome.ERROR or (_judged_bad(r) and r.rule.severity >= threshold)]

    def warnings(self, results: Iterable[Result], fail_on: Severity | None = None) -> list[Result]:
        """Failures and NOT EVALUATED results below the threshold: shown everywhere, never hidden."""
        threshold = fail_on or self.fail_on
        return [r for r in results if _judged_bad(r) and not r.rule.severity >= threshold]


def _judged_bad(result: Result) -> bool:
    return result.outcome in (Outcome.FAIL, Outcome.NOT_EVALUATED)


TABLES = ("policy", "http", "disabled", "rules")
RULE_KEYS = {"area", "severity", "description", "enabled", "reason"}
ERROR_STATUSES = (404, 429, 502)


def _layer(base: Policy | None, path: Path) -> Policy:
    """Read ``path`` over ``base``: the first layer (None) defines rules; later ones may change
    severity, enabled, reason and parameters of known rules, fail_on, [http] and [disabled]."""
    fix = "pass an existing policy file (--policy FILE, or [stack] policy in the stack file)"
    top = Reader(path, tomldata.read(path, PolicyError, "policy file", fix), "", PolicyError)
    unknown = sorted(set(top.data) - set(TABLES))
    if unknown:
        raise top.fail(unknown[0], "is not a known table", "use [policy], [http], [disabled] and [rules.ID]")
    rules = dict(base.rules) if base else {}
    table = top.table("rules")
    for rule_id in table.data:
        entry = table.table(rule_id)
        if base is None:
            rules[rule_id] = _define(rule_id, entry)
        elif rule_id in rules:
            rules[rule_id] = _override(rules[rule_id], entry)
        else:
            raise table.fail(rule_id, "is not a rule of the policy", f"use one of: {', '.join(sorted(rules))}")
    section = top.table("policy")
    section.only({"fail_on"})
    fail_on = _severity(section, "fail_on", base.fail_on if base else Severity.HIGH)
    http = _http(top.table("http"), base.http if base else HttpSurface())
    disabled = {**(base.extra_disabled if base else {}), **disabled_checks(top.table("disabled"))}
    return Policy(rules, fail_on, (*(base.source if base else ()), path), http, disabled)


def _severity(table: Reader, key: str, default: Severity | None = None) -> Severity:
    value = table.get(key, str, default.value if default else None, required=default is None)
    try:
        return Severity(value)
    except ValueError:
        choices = ", ".join(s.value for s in Severity)
        raise table.fail(key, f"{value!r} is not a severity", f"use one of: {choices}") from None


def _reason(entry: Reader, enabled: bool, reason: str | None) -> str | None:
    if reason is not None and not reason.strip():
        raise entry.fail("reason", "is empty", 'write reason = "why it is disabled"')
    if not enabled and reason is None:
        raise entry.fail(
            "",
            "is disabled without a reason",
            'a check is switched off only with a written reason: add reason = "why it does not apply"',
        )
    return reason.strip() if reason is not None else None


def _define(rule_id: str, entry: Reader) -> Rule:
    name = entry.get("area", str, required=True)
    try:
        area = Area(name)
    except ValueError:
        raise entry.fail(
            "area", f"{name!r} is not an area", f"use one of: {', '.join(a.value for a in Area)}"
        ) from None
    severity = _severity(entry, "severity")
    description = entry.get("description", str, required=True)
    enabled = entry.get("enabled", bool, True)
    reason = _reason(entry, enabled, entry.get("reason", str))
    params = {k: v for k, v in entry.data.items() if k not in RULE_KEYS}
    return Rule(rule_id, area, severity, description, params, enabled, reason)


def _override(rule: Rule, entry: Reader) -> Rule:
    changes: dict[str, Any] = {}
    if "severity" in entry.data:
        changes["severity"] = _severity(entry, "severity")
    enabled = entry.get("enabled", bool, rule.enabled)
    params = dict(rule.params)
    for key, value in entry.data.items():
        if key in RULE_KEYS - {"area", "description"}:
            continue
        if key not in params:
            known = ", ".join(["severity", "enabled", "reason", *params])
            raise entry.fail(key, "is not a setting of this rule", f"use one of: {known}")
        params[key] = _param(entry, key, value, params[key])
    reason = _reason(entry, enabled, entry.get("reason", str, rule.reason))
    return replace(rule, params=params, enabled=enabled, reason=reason, **changes)


def _param(entry: Reader, key: str, value: Any, default: Any) -> Any:
    """A parameter takes the type of its default; an int where the default is a float is fine,
    a bool is never a number."""
    expected = type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    ok = ok or (expected is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        got = f"{type(value).__name__} ({value!r})"
        raise entry.fail(key, f"must be {expected.__name__}, not {got}", f"write {key} like the default: {default!r}")
    return value


def _path(table: Reader, key: str, default: str | None) -> str | None:
    value: str | None = table.get(key, str, default)
    if value is not None and not value.startswith("/"):
        raise table.fail(key, f"must be a path starting with /, not {value!r}", f'write {key} = "/..."')
    return value


def _http(table: Reader, current: HttpSurface) -> HttpSurface:
    table.only({"routes", "not_found_path", "rate_limited_path", "error_statuses"})
    routes = table.str_list("routes") if "routes" in table.data else current.routes
    if not all(r.startswith("/") for r in routes):
        raise table.fail("routes", "must be a list of paths starting with /", 'write routes = ["/", "/health"]')
    statuses = table.get("error_statuses", list, list(current.error_statuses))
    if not all(s in ERROR_STATUSES and not isinstance(s, bool) for s in statuses):
        raise table.fail(
            "error_statuses",
            f"may hold only {', '.join(map(str, ERROR_STATUSES))}, not {statuses!r}",
            "write error_statuses = [404, 429, 502]",
        )
    return HttpSurface(
        tuple(routes),
        _path(table, "not_found_path", current.not_found_path) or current.not_found_path,
        _path(table, "rate_limited_path", current.rate_limited_path),
        tuple(statuses),
    )
