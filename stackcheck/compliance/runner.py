"""Running rules: a registry of checks by rule id, the context they run in, and the runner."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackcheck.compliance.model import Area, Outcome, Policy, Result, Rule

__all__ = [
    "CheckContext",
    "NotEvaluated",
    "Outcome",
    "check",
    "evaluate",
    "not_applicable",
    "run",
    "scoped_policy",
    "table",
]
from stackcheck.errors import StackcheckError
from stackcheck.stack import Stack
from stackcheck.stackfile import StackSpec
from stackcheck.target import HttpTarget

CheckFn = Callable[[Rule, "CheckContext"], list[Result]]
REGISTRY: dict[str, CheckFn] = {}
# Areas whose rules read the containers of a booted stack, not just a URL; NEEDS_STACK holds
# the checks of other areas that do (a link to cut, a data store's TLS).
STACK_AREAS = {Area.CONTAINERS, Area.DATASTORES}
NEEDS_STACK: set[str] = set()


def check(rule_id: str, needs_stack: bool = False) -> Callable[[CheckFn], CheckFn]:
    """Register the function that evaluates ``rule_id`` (``needs_stack``: only on a booted stack)."""

    def register(fn: CheckFn) -> CheckFn:
        REGISTRY[rule_id] = fn
        if needs_stack:
            NEEDS_STACK.add(rule_id)
        return fn

    return register


def needs_stack(rule: Rule) -> bool:
    return rule.area in STACK_AREAS or rule.id in NEEDS_STACK


def external_reason(target: HttpTarget) -> str:
    return f"not applicable: --target {target.base_url} is an external deployment (nothing booted)"


def scoped_policy(spec: StackSpec | None, override: str | Path | None, target: HttpTarget | None = None) -> Policy:
    """The policy a run judges by: the default, the stack's policy (``[stack] policy``), then
    ``override`` (--policy), with the stack file's [disabled] checks and the rules scoped to
    images the stack does not run (``out_of_image_scope``); against an external
    ``target`` every rule that needs a booted stack is disabled, with the reason (the user chose
    the scope: not a NOT EVALUATED)."""
    policy = Policy.load(spec.policy if spec else None, override)
    if spec is not None:  # the stack file's own reasons win
        policy = policy.disabling(out_of_image_scope(policy, spec)).disabling(spec.disabled)
    if target is not None and not target.booted:
        reason = external_reason(target)
        policy = policy.disabling({r.id: reason for r in policy.rules.values() if needs_stack(r)})
    return policy


def out_of_image_scope(policy: Policy, spec: StackSpec) -> dict[str, str]:
    """The rules the policy scopes to their images (``only_with_images = true``) that no service
    of the stack runs: rule id -> the reason they are DISABLED. The policy took that decision for
    those rules (an Ollama rule on a stack without Ollama), so no [disabled] line is needed; a
    rule without the flag stays NOT EVALUATED there, and fails the gate unless disabled by name."""
    running = {svc.image for svc in spec.services.values()}
    out = {}
    for rule in policy.rules.values():
        wanted = rule.params.get("images")
        if rule.params.get("only_with_images") and isinstance(wanted, list) and not running & set(wanted):
            out[rule.id] = f"not applicable: no service runs an image in {wanted} (the policy's only_with_images)"
    return out


@dataclass
class CheckContext:
    target: HttpTarget | None  # None: a booted stack that declares no HTTP entrypoint
    stack: Stack | None
    policy: Policy
    # Observations shared between rules of one run (e.g. the responses of every route family).
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run; a failure is kept too, so that the next rule asking gets it
        at once instead of waiting for it again."""
        if key not in self.cache:
            try:
                self.cache[key] = compute()
            except Exception as exc:
                self.cache[key] = _Failed(exc)
        value = self.cache[key]
        if isinstance(value, _Failed):
            raise value.error
        return value

    def require_stack(self, rule: Rule) -> Stack:
        if self.stack is None:
            raise NotEvaluated(external_reason(self.http_target()))
        return self.stack

    def http_target(self) -> HttpTarget:
        """Where HTTP/TLS checks aim; a stack without an entrypoint has nothing for them."""
        if self.target is None:
            raise NotEvaluated(
                "not applicable: the stack declares no HTTP entrypoint ([stack] entrypoint); or disable it: "
                '[disabled] RULE = "reason" in the stack file or policy'
            )
        return self.target

    @property
    def subject(self) -> str:
        """What a result that names no finer subject is about: the target, else the stack."""
        if self.target is not None:
            return self.target.base_url
        return f"stack {self.stack.spec.name}" if self.stack is not None else "no target"


@dataclass(frozen=True)
class _Failed:
    error: Exception


class NotEvaluated(Exception):
    """Raised by a check that finds nothing to judge on this target (the reason is the message)."""


def not_applicable(rule: Rule, missing: str, configure: str = "") -> NotEvaluated:
    """The NotEvaluated of a rule whose subject this stack lacks: what is missing, how to give
    the rule one (``configure``), and how to switch it off by name."""
    how = f"{configure}, or disable it" if configure else "disable it"
    return NotEvaluated(
        f'not applicable: {missing}; {how}: [disabled] {rule.id} = "reason" in the stack file or policy'
    )


def evaluate(rule: Rule, ctx: CheckContext) -> list[Result]:
    """Run one rule; a crash in a check is an ERROR result with the reason, never a traceback."""
    if ctx.stack is None and needs_stack(rule):
        return [Result(rule, Outcome.DISABLED, ctx.subject, external_reason(ctx.http_target()))]
    fn = REGISTRY.get(rule.id)
    if fn is None:
        return [Result(rule, Outcome.ERROR, "policy", f"no check implements rule {rule.id!r}")]
    try:
        results = fn(rule, ctx)
    except NotEvaluated as skip:
        return [Result(rule, Outcome.NOT_EVALUATED, ctx.subject, str(skip))]
    except StackcheckError as exc:
        return [Result(rule, Outcome.ERROR, ctx.subject, f"{exc.problem} (fix: {exc.fix})")]
    except Exception as exc:  # a check must report, not crash the run
        return [Result(rule, Outcome.ERROR, ctx.subject, f"check crashed: {type(exc).__name__}: {exc}")]
    return results or [
        Result(rule, Outcome.NOT_EVALUATED, ctx.subject, "nothing to check: the rule matched no subject")
    ]


def run(ctx: CheckContext, areas: Iterable[Area] | None = None) -> list[Result]:
    wanted = set(areas) if areas else set(Area)
    results: list[Result] = []
    disabled = ctx.policy.disabled
    for rule in ctx.policy.rules.values():
        if rule.area not in wanted:
            continue
        if rule.id in disabled:  # shown with its reason, never silently left out
            results.append(Result(rule, Outcome.DISABLED, "policy", disabled[rule.id]))
        else:
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
