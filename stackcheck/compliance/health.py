"""Health rules: liveness is fast, and comprehensive health follows the real state of each
dependency (cut its link through Toxiproxy, see it reported, restore, see it recover)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.stack import Stack
from stackcheck.stats import percentile

BAD = ("unhealthy", "degraded")


@check("health-liveness")
def liveness(rule: Rule, ctx: CheckContext) -> list[Result]:
    path, samples, limit = rule.param("path"), rule.param("samples"), rule.param("max_p95_ms")
    if not path:
        raise not_applicable(
            rule, 'no liveness route is configured (path = "")', f'set [rules.{rule.id}] path = "/health" in the policy'
        )
    latencies, statuses = [], []
    with ctx.http_target().http(timeout=5) as client:
        client.get(path)  # warm the connection: TLS setup is not the endpoint's latency
        for _ in range(samples):
            started = time.perf_counter()
            statuses.append(client.get(path).status_code)
            latencies.append((time.perf_counter() - started) * 1000)
    p95 = percentile(sorted(latencies), 95)
    bad = [s for s in statuses if s != 200]
    evidence = f"{samples} requests: p95 {p95:.1f} ms (max {max(latencies):.1f} ms), statuses {sorted(set(statuses))}"
    problem = (
        f"{len(bad)} answers were not 200" if bad else (f"p95 {p95:.1f} ms > {limit:g} ms" if p95 > limit else None)
    )
    return [
        Result(
            rule,
            Outcome.FAIL if problem else Outcome.PASS,
            f"GET {path}",
            f"{problem}: {evidence}" if problem else evidence,
        )
    ]


def dependency_status(client: httpx.Client, path: str, name: str) -> str:
    try:
        body: dict[str, Any] = client.get(path).json()  # 503 still carries the report
    except (httpx.HTTPError, ValueError) as exc:
        return f"no report ({type(exc).__name__})"
    return next((str(c.get("status")) for c in body.get("checks", []) if c.get("name") == name), "not reported")


def _await(
    client: httpx.Client, path: str, name: str, want: tuple[str, ...], timeout: float
) -> tuple[float | None, str]:
    started = time.monotonic()
    status = ""
    while time.monotonic() - started < timeout:
        status = dependency_status(client, path, name)
        if status in want:
            return time.monotonic() - started, status
        time.sleep(0.2)
    return None, status


def follow_link(
    stack: Stack, link: str, dependency: str, path: str, detect_s: float, recover_s: float
) -> tuple[str | None, str]:
    """Cut ``link``, wait for ``dependency`` to be reported bad, restore, wait for healthy."""
    with stack.http(timeout=5) as client:
        before = dependency_status(client, path, dependency)
        if before != "healthy":
            return f"{dependency} is {before!r} before the link was cut", ""
        with stack.link(link).down():
            detected, during = _await(client, path, dependency, BAD, detect_s)
        recovered, after = _await(client, path, dependency, ("healthy",), recover_s)
    evidence = (
        f"{dependency}: healthy -> {during} after {detected:.1f}s with {link} cut -> {after}"
        + (f" {recovered:.1f}s after restore" if recovered is not None else "")
        if detected is not None
        else ""
    )
    if detected is None:
        return f"{dependency} still {during!r} {detect_s:g}s after {link} was cut", evidence
    if recovered is None:
        return f"{dependency} still {after!r} {recover_s:g}s after {link} was restored", evidence
    return None, evidence


@check("health-dependencies", needs_stack=True)
def dependencies(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack = ctx.require_stack(rule)
    configure = f"name them in [rules.{rule.id}] links and path in the policy"
    if not rule.param("links"):
        raise not_applicable(rule, "the rule lists no link to cut (links = {})", configure)
    if not rule.param("path"):
        raise not_applicable(rule, 'no comprehensive health route is configured (path = "")', configure)
    out = []
    for link, dependency in rule.param("links").items():
        if link not in stack.spec.links:
            known = ", ".join(stack.spec.links) or "none"
            reason = f"not applicable: the stack has no link {link} (its links: {known}); fix [rules.{rule.id}] links"
            out.append(Result(rule, Outcome.NOT_EVALUATED, link, reason))
            continue
        problem, evidence = follow_link(
            stack, link, dependency, rule.param("path"), rule.param("detect_s"), rule.param("recover_s")
        )
        out.append(Result(rule, Outcome.FAIL if problem else Outcome.PASS, link, problem or evidence))
    return out
