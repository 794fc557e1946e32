"""Running rules: a registry of checks by rule id, the context they run in, and the runner."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stackcheck.compliance.model import Area, Outcome, Policy, Result, Rule

__all__ = ["CheckContext", "NotEvaluated", "Outcome", "check", "evaluate", "run", "table"]
from stackcheck.errors import StackcheckError
from stackcheck.stack import Stack
from stackcheck.target import HttpTarget

CheckFn = Callable[[Rule, "CheckContext"], list[Result]]
REGISTRY: dict[str, CheckFn] = {}
# Areas whose rules need containers of a booted stack, not just a URL.
CONTAINER_AREAS = {Area.CONTAINERS, Area.DATASTORES, Area.HEALTH}


def check(rule_id: str) -> Callable[[CheckFn], CheckFn]:
    """Register the function that evaluates ``rule_id``."""

    def register(fn: CheckFn) -> CheckFn:
        REGISTRY[rule_id] = fn
        return fn

    return register


@dataclass
class CheckContext:
    target: HttpTarget
    stack: Stack | None
    policy: Policy
    # Observations shared between rules of one run (e.g. the responses of every route family).
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def require_stack(self, rule: Rule) -> Stack:
        if self.stack is None:
            raise NotEvaluated(f"needs a booted stack; {self.target.base_url} is an external target")
        return self.stack


class NotEvaluated(Exception):
    """Raised by a check that finds nothing to judge on this target (the reason is the message)."""


def evaluate(rule: Rule, ctx: CheckContext) -> list[Result]:
    """Run one rule; a crash in a check is an ERROR result with the reason, never a traceback."""
    if rule.area in CONTAINER_AREAS and ctx.stack is None:
        return [Result(rule, Outcome.NOT_EVALUATED, ctx.target.base_url, "needs a booted stack (container-level rule)")]
    fn = REGISTRY.get(rule.id)
    if fn is None:
        return [Result(rule, Outcome.ERROR, "policy", f"no check implements rule {rule.id!r}")]
    try:
        results = fn(rule, ctx)
    except NotEvaluated as skip:
        return [Result(rule, Outcome.NOT_EVALUATED, ctx.target.base_url, str(skip))]
    except StackcheckError as exc:
        return [Result(rule, Outcome.ERROR, ctx.target.base_url, f"{exc.problem} (fix: {exc.fix})")]
    except Exception as exc:  # a check must report, not crash the run
        return [Result(rule, Outcome.ERROR, ctx.target.base_url, f"check crashed: {type(exc).__name__}: {exc}")]
    return results or [
        Result(rule, Outcome.NOT_EVALUATED, ctx.target.base_url, "nothing to check: the rule matched no subject")
    ]


def run(ctx: CheckContext, areas: Iterable[Area] | None = None) -> list[Result]:
    wanted = set(areas) if areas else set(Area)
    results: list[Result] = []
    for rule in ctx.policy.rules.values():
        if rule.enabled and rule.area in wanted:
            started = time.monotonic()
            results.extend(evaluate(rule, ctx))
            ctx.cache.setdefault("_timings", {})[rule.id] = time.monotonic() - started
    return results


def table(results: Iterable[Result]) -> str:
    """A plain-text table: rule, severity, result, subject, evidence."""
    lines = [f"{'rule':<30} {'severity':<9} {'result':<6} {'subject':<28} evidence"]
    for r in results:
        lines.append(
            f"{r.rule.id:<30} {r.rule.severity.value:<9} {r.outcome.value:<6} {r.subject[:28]:<28} {r.evidence}"
        )
    return "\n".join(lines)
