"""Policy rules and their results.

A policy is data (``policies/default.toml``, overridable per stack with ``--policy FILE``): each
rule has an id, an area, a severity, a description and typed parameters. A check turns a rule
into results, one per subject (a route, a container, a data store), each with evidence: what
was observed. The gate fails on any failed result at or above ``fail_on``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from stackcheck import resources
from stackcheck.errors import PolicyError

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
    def load(cls, override: str | Path | None = None, default: Path = DEFAULT_POLICY) -> Policy:
        """The default policy, with ``override`` (a user's file) merged on top, rule by rule."""
        base = _read(default)
        policy = _parse(base, default, (default,))
        if override is None:
            return policy
        path = Path(override)
        return _merge(policy, _read(path), path)

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


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise PolicyError(
            f"cannot read policy file {path}: {exc.strerror}", "pass an existing file with --policy"
        ) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", "save the policy as UTF-8 TOML"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}", "fix the syntax at the position named") from exc


def _severity(value: Any, where: str, path: Path) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        choices = ", ".join(s.value for s in Severity)
        raise PolicyError(f"{path}: [{where}] severity {value!r} is not a severity", f"use one of: {choices}") from None


TABLES = {"policy", "rules", "http", "disabled"}


def _disabled_table(raw: Any, path: Path) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise PolicyError(
            f"{path}: [disabled] must map check names to the reason each is disabled",
            'write "chaos-check-or-rule-id" = "why it does not apply to this stack"',
        )
    return {k: v.strip() for k, v in raw.items()}


def _need_reason(rule_id: str, enabled: bool, reason: Any, path: Path) -> str | None:
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise PolicyError(f"{path}: [rules.{rule_id}] reason must be text", 'write reason = "why it is disabled"')
    if not enabled and reason is None:
        raise PolicyError(
            f"{path}: [rules.{rule_id}] is disabled without a reason",
            'a check is switched off only with a written reason: add reason = "why it does not apply"',
        )
    return reason.strip() if isinstance(reason, str) else None


def _http(raw: Any, path: Path, current: HttpSurface) -> HttpSurface:
    if not isinstance(raw, dict) or set(raw) - {"routes", "not_found_path", "rate_limited_path", "error_statuses"}:
        raise PolicyError(
            f"{path}: [http] has an unknown key or is not a table",
            "use routes, not_found_path, rate_limited_path, error_statuses",
        )
    routes = raw.get("routes", list(current.routes))
    statuses = raw.get("error_statuses", list(current.error_statuses))
    if not (isinstance(routes, list) and all(isinstance(r, str) and r.startswith("/") for r in routes)):
        raise PolicyError(f"{path}: [http] routes must be a list of paths", 'write routes = ["/", "/api/health"]')
    if not (isinstance(statuses, list) and all(s in (404, 429, 502) for s in statuses)):
        raise PolicyError(
            f"{path}: [http] error_statuses may hold 404, 429 and 502", "write error_statuses = [404, 429, 502]"
        )
    for key in ("not_found_path", "rate_limited_path"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].startswith("/")):
            raise PolicyError(f"{path}: [http] {key} must be a path", f'write {key} = "/api/..."')
    return HttpSurface(
        tuple(routes),
        raw.get("not_found_path", current.not_found_path),
        raw.get("rate_limited_path", current.rate_limited_path),
        tuple(statuses),
    )


def _parse(data: Mapping[str, Any], path: Path, source: tuple[Path, ...]) -> Policy:
    unknown = set(data) - TABLES
    if unknown:
        raise PolicyError(
            f"{path}: [{sorted(unknown)[0]}] is not a known table", "use [policy], [http], [disabled] and [rules.ID]"
        )
    rules: dict[str, Rule] = {}
    raw_rules = data.get("rules", {})
    if not isinstance(raw_rules, dict):
        raise PolicyError(f"{path}: [rules] must be a table", "write [rules.ID] tables")
    for rule_id, raw in raw_rules.items():
        if not isinstance(raw, dict):
            raise PolicyError(
                f"{path}: [rules.{rule_id}] must be a table",
                f"write [rules.{rule_id}] with area, severity, description",
            )
        raw = dict(raw)
        try:
            area = Area(raw.pop("area"))
            description = raw.pop("description")
        except KeyError as exc:
            raise PolicyError(
                f"{path}: [rules.{rule_id}] lacks {exc.args[0]!r}", "every rule needs area, severity and description"
            ) from None
        except ValueError:
            raise PolicyError(
                f"{path}: [rules.{rule_id}] has an unknown area", f"use one of: {', '.join(a.value for a in Area)}"
            ) from None
        severity = _severity(raw.pop("severity", None), f"rules.{rule_id}", path)
        enabled = raw.pop("enabled", True)
        if not isinstance(description, str) or not isinstance(enabled, bool):
            raise PolicyError(
                f"{path}: [rules.{rule_id}] description must be text and enabled a boolean", "fix the types"
            )
        reason = _need_reason(rule_id, enabled, raw.pop("reason", None), path)
        rules[rule_id] = Rule(rule_id, area, severity, description, raw, enabled, reason)
    fail_on = _severity(data.get("policy", {}).get("fail_on", "high"), "policy", path)
    disabled = _disabled_table(data.get("disabled", {}), path)
    return Policy(rules, fail_on, source, _http(data.get("http", {}), path, HttpSurface()), disabled)


def _merge(policy: Policy, data: Mapping[str, Any], path: Path) -> Policy:
    """A user's file may change severity, enabled and parameters of known rules, and fail_on."""
    unknown = set(data) - TABLES
    if unknown:
        raise PolicyError(
            f"{path}: [{sorted(unknown)[0]}] is not a known table", "use [policy], [http], [disabled] and [rules.ID]"
        )
    rules = dict(policy.rules)
    raw_rules = data.get("rules", {})
    if not isinstance(raw_rules, dict):
        raise PolicyError(f"{path}: [rules] must be a table", "write [rules.ID] tables")
    for rule_id, raw in raw_rules.items():
        if rule_id not in rules:
            raise PolicyError(
                f"{path}: [rules.{rule_id}] is not a rule of the policy", f"use one of: {', '.join(sorted(rules))}"
            )
        if not isinstance(raw, dict):
            raise PolicyError(f"{path}: [rules.{rule_id}] must be a table", "write key = value lines under it")
        rule = rules[rule_id]
        params = dict(rule.params)
        changes: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "severity":
                changes["severity"] = _severity(value, f"rules.{rule_id}", path)
            elif key == "enabled":
                if not isinstance(value, bool):
                    raise PolicyError(
                        f"{path}: [rules.{rule_id}] enabled must be true or false", "write enabled = false"
                    )
                changes["enabled"] = value
            elif key == "reason":
                changes["reason"] = value
            elif key in params:
                expected = type(params[key])
                # An int where the default is a float is fine; a bool is never an int here.
                ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
                ok = ok or (expected is float and isinstance(value, int) and not isinstance(value, bool))
                if not ok:
                    got = f"{type(value).__name__} ({value!r})"
                    raise PolicyError(
                        f"{path}: [rules.{rule_id}] {key} must be {expected.__name__}, not {got}",
                        f"write {key} like the default: {params[key]!r}",
                    )
                params[key] = value
            else:
                known = ", ".join(["severity", "enabled", "reason", *params])
                raise PolicyError(
                    f"{path}: [rules.{rule_id}] {key!r} is not a setting of this rule", f"use one of: {known}"
                )
        enabled = changes.get("enabled", rule.enabled)
        changes["reason"] = _need_reason(rule_id, enabled, changes.get("reason", rule.reason), path)
        rules[rule_id] = replace(rule, params=params, **changes)
    fail_on = policy.fail_on
    if "policy" in data:
        section = data["policy"]
        if not isinstance(section, dict) or set(section) - {"fail_on"}:
            raise PolicyError(f"{path}: [policy] takes only fail_on", 'write [policy] fail_on = "high"')
        fail_on = _severity(section.get("fail_on", fail_on.value), "policy", path)
    http = _http(data["http"], path, policy.http) if "http" in data else policy.http
    disabled = dict(policy.extra_disabled) | _disabled_table(data.get("disabled", {}), path)
    return Policy(rules, fail_on, (*policy.source, path), http, disabled)
