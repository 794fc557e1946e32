"""HTTP header rules, evaluated on every route family and on error responses (404/429/502).

The responses are fetched once per run and shared by all header rules. The 429 comes from a
burst over the rate limit; the 502 from stopping the entrypoint's upstream services for a
moment (booted stacks only; they are started again and awaited before the check returns).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, NotEvaluated, check
from stackcheck.errors import StackError
from stackcheck.stack import ServiceHandle, Stack

VERSION = re.compile(r"\d+\.\d+|/\d")


@dataclass(frozen=True)
class Observed:
    """One response of the surface: where it came from and its headers (lower-cased names)."""

    label: str  # e.g. "GET /api/health -> 200" or "error 429"
    status: int
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass(frozen=True)
class Missing:
    """An error response the policy asks for that the target did not produce: nothing to judge."""

    label: str  # e.g. "error 429"
    reason: str  # what was sent and seen instead


def _observe(label: str, response: httpx.Response) -> Observed:
    return Observed(label, response.status_code, tuple((k.lower(), v) for k, v in response.headers.multi_items()))


def surface(ctx: CheckContext) -> list[Observed | Missing]:
    return list(ctx.memo("headers.surface", lambda: _fetch_surface(ctx)))


def _fetch_surface(ctx: CheckContext) -> list[Observed | Missing]:
    http = ctx.policy.http
    seen: list[Observed | Missing] = []
    with ctx.target.http(follow_redirects=False) as client:
        for route in http.routes:
            response = client.get(route)
            seen.append(_observe(f"GET {route} -> {response.status_code}", response))
        if 404 in http.error_statuses:
            response = client.get(http.not_found_path)
            seen.append(_observe(f"error 404 ({http.not_found_path} -> {response.status_code})", response))
        if 429 in http.error_statuses and http.rate_limited_path:
            seen.append(_provoke_429(client, http.rate_limited_path))
        if 502 in http.error_statuses and ctx.stack is not None:
            route = http.routes[-1] if http.routes else "/"
            with upstreams_stopped(ctx.stack):
                response = client.get(route)
            # Any 5xx from the edge with its upstream gone is an error page worth checking; a
            # success (a route the edge serves itself) is no error page and is not judged as one.
            if response.is_server_error:
                seen.append(_observe(f"error 502 (upstream stopped -> {response.status_code})", response))
            else:
                reason = f"GET {route} answered {response.status_code} with the upstreams stopped, not 5xx"
                seen.append(Missing("error 502", reason))
    return seen


def _provoke_429(client: httpx.Client, path: str, max_requests: int = 200, refill_s: float = 2.5) -> Observed | Missing:
    """The first 429 of a burst of at most ``max_requests`` to ``path``; Missing when none came,
    so that no other answer is ever judged as the 429 page."""
    statuses: Counter[int] = Counter()
    for _ in range(max_requests):
        response = client.get(path)
        if response.status_code == 429:
            observed = _observe(f"error 429 ({path} -> 429)", response)
            time.sleep(refill_s)  # let the limiter's bucket refill for whatever runs next
            return observed
        statuses[response.status_code] += 1
    seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    return Missing("error 429", f"no 429 after {max_requests} requests to {path} (statuses {seen})")


@contextlib.contextmanager
def upstreams_stopped(stack: Stack, timeout: float = 60.0) -> Iterator[None]:
    """Stop every instance the entrypoint depends on; start and await them again on exit."""
    entry = stack.spec.entry_service
    handles = [h for dep in stack.spec.services[entry].depends_on for h in stack.instances(dep)] if entry else []
    for handle in handles:
        handle.docker.stop(timeout=1)
    try:
        yield
    finally:
        for handle in handles:
            handle.docker.start()
        _await_healthy(stack, handles, timeout)


def _await_healthy(stack: Stack, handles: list[ServiceHandle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with stack.http(timeout=3) as client:
        while time.monotonic() < deadline:
            for handle in handles:
                handle.docker.reload()
            healthy = all(
                h.docker.attrs["State"].get("Health", {}).get("Status", "healthy") == "healthy" for h in handles
            )
            # nginx marks failed upstreams down for fail_timeout: wait until it routes again.
            if healthy and client.get(stack.spec.health_path).status_code == 200:
                return
            time.sleep(0.25)
    raise StackError(f"upstreams of the entrypoint did not come back within {timeout:.0f}s", "read their logs")


def _not_evaluated(rule: Rule, missing: Missing) -> Result:
    return Result(rule, Outcome.NOT_EVALUATED, missing.label, missing.reason)


def _surface_or_skip(ctx: CheckContext) -> list[Observed | Missing]:
    seen = surface(ctx)
    if not seen:
        raise NotEvaluated("the policy's [http] names no route and no error response to fetch")
    return seen


def _results(rule: Rule, ctx: CheckContext, verdict: Callable[[Observed], str | None]) -> list[Result]:
    out = []
    for obs in _surface_or_skip(ctx):
        if isinstance(obs, Missing):
            out.append(_not_evaluated(rule, obs))
            continue
        problem = verdict(obs)
        out.append(
            Result(rule, Outcome.FAIL if problem else Outcome.PASS, obs.label, problem or _ok_evidence(obs, rule))
        )
    return out


EVIDENCE_HEADERS = {
    "headers-hsts": ("strict-transport-security",),
    "headers-nosniff": ("x-content-type-options",),
    "headers-frame-options": ("x-frame-options", "content-security-policy"),
    "headers-csp": ("content-security-policy",),
    "headers-referrer-policy": ("referrer-policy",),
    "headers-no-version-disclosure": ("server", "x-powered-by"),
    "headers-xss-protection": ("x-xss-protection",),
    "headers-cookies": ("set-cookie",),
}


def _ok_evidence(obs: Observed, rule: Rule) -> str:
    """The headers a passing rule looked at, as observed ("absent" when not sent)."""
    return "; ".join(f"{name}: {obs.get(name) or 'absent'}" for name in EVIDENCE_HEADERS.get(rule.id, ()))


# -- rules --------------------------------------------------------------------------------------


def hsts_problem(value: str | None, min_max_age: int, include_subdomains: bool) -> str | None:
    if value is None:
        return "Strict-Transport-Security is missing"
    match = re.search(r"max-age\s*=\s*\"?(\d+)", value, re.I)
    if not match:
        return f"Strict-Transport-Security has no max-age: {value!r}"
    if int(match.group(1)) < min_max_age:
        return f"HSTS max-age {match.group(1)} < {min_max_age}"
    if include_subdomains and "includesubdomains" not in value.lower():
        return f"HSTS lacks includeSubDomains: {value!r}"
    return None


@check("headers-hsts")
def hsts(rule: Rule, ctx: CheckContext) -> list[Result]:
    if not ctx.target.base_url.startswith("https://"):
        return [Result(rule, Outcome.FAIL, ctx.target.base_url, "the target is not served over HTTPS")]
    return _results(
        rule,
        ctx,
        lambda o: hsts_problem(
            o.get("strict-transport-security"), rule.param("min_max_age"), rule.param("include_subdomains")
        ),
    )


@check("headers-nosniff")
def nosniff(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(o: Observed) -> str | None:
        value = o.get("x-content-type-options")
        return (
            None
            if value and value.strip().lower() == "nosniff"
            else f"X-Content-Type-Options is {value!r}, not nosniff"
        )

    return _results(rule, ctx, verdict)


def csp_directives(value: str | None) -> dict[str, str]:
    directives: dict[str, str] = {}
    for part in (value or "").split(";"):
        words = part.split(maxsplit=1)
        if words:
            # A repeated directive is ignored by browsers: the first one counts.
            directives.setdefault(words[0].lower(), words[1].strip() if len(words) > 1 else "")
    return directives


def ancestors_problem(sources: str, allowed: Sequence[str]) -> str | None:
    """What a frame-ancestors source list lets frame the page beyond 'none', 'self' and ``allowed``."""
    # 'none' counts only alone (browsers ignore it next to other sources); an empty list matches nothing.
    others = [s for s in sources.split() if s.lower() != "'none'"]
    permitted = {a.lower().rstrip("/") for a in allowed}
    loose = [s for s in others if s.lower() != "'self'" and s.lower().rstrip("/") not in permitted]
    return f"frame-ancestors {sources!r} lets {' '.join(loose)} frame the page" if loose else None


def xfo_denies(values: Sequence[str]) -> bool:
    """X-Frame-Options as the HTML standard parses it (all headers, comma-separated values)."""
    options = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    if len(options) > 1:  # conflicting values: browsers block framing if any is a known one
        return bool(options & {"deny", "sameorigin", "allowall"})
    return options in ({"deny"}, {"sameorigin"})  # ALLOW-FROM is obsolete: browsers ignore it


def frame_problem(xfo: Sequence[str], csp: Sequence[str], allowed: Sequence[str] = ()) -> str | None:
    """None when framing is limited to 'none'/'self'/``allowed`` origins (CSP) or denied (X-Frame-Options)."""
    lists = [d["frame-ancestors"] for d in map(csp_directives, csp) if "frame-ancestors" in d]
    if lists:
        # Every CSP header is enforced, so one restrictive list suffices; browsers that know
        # frame-ancestors ignore X-Frame-Options, so it cannot make up for a loose list.
        problems = [ancestors_problem(sources, allowed) for sources in lists]
        if None in problems:
            return None
        return (
            f"framing allowed: CSP {'; '.join(p for p in problems if p)} (allowed: 'none', 'self', "
            f"policy allowed_frame_ancestors {list(allowed)}); X-Frame-Options {list(xfo)} is ignored "
            "by browsers when frame-ancestors is set"
        )
    if xfo_denies(xfo):
        return None
    return f"framing not denied: X-Frame-Options {list(xfo)}, no CSP frame-ancestors"


@check("headers-frame-options")
def frame_options(rule: Rule, ctx: CheckContext) -> list[Result]:
    allowed = rule.param("allowed_frame_ancestors")
    return _results(
        rule, ctx, lambda o: frame_problem(o.all("x-frame-options"), o.all("content-security-policy"), allowed)
    )


def csp_problem(value: str | None) -> str | None:
    if not value:
        return "Content-Security-Policy is missing"
    directives = csp_directives(value)
    scripts = directives.get("script-src", directives.get("default-src"))
    if scripts is None:
        return "CSP restricts no script source (no script-src or default-src)"
    unsafe = [token for token in ("'unsafe-inline'", "'unsafe-eval'") if token in scripts]
    return f"CSP script sources allow {', '.join(unsafe)}" if unsafe else None


@check("headers-csp")
def csp(rule: Rule, ctx: CheckContext) -> list[Result]:
    return _results(rule, ctx, lambda o: csp_problem(o.get("content-security-policy")))


@check("headers-referrer-policy")
def referrer_policy(rule: Rule, ctx: CheckContext) -> list[Result]:
    allowed = [a.lower() for a in rule.param("allowed")]

    def verdict(o: Observed) -> str | None:
        value = o.get("referrer-policy")
        # Browsers use the last policy they recognise in a comma-separated list.
        last = value.split(",")[-1].strip().lower() if value else None
        return None if last in allowed else f"Referrer-Policy is {value!r}, expected one of {allowed}"

    return _results(rule, ctx, verdict)


@check("headers-no-version-disclosure")
def version_disclosure(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(o: Observed) -> str | None:
        leaks = [f"{n}: {v}" for n in ("server", "x-powered-by") for v in o.all(n) if VERSION.search(v)]
        return f"discloses a version: {'; '.join(leaks)}" if leaks else None

    return _results(rule, ctx, verdict)


@check("headers-xss-protection")
def xss_protection(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(o: Observed) -> str | None:
        value = o.get("x-xss-protection")
        return (
            None if value is None or value.strip() == "0" else f"X-XSS-Protection is {value!r} (obsolete: absent or 0)"
        )

    return _results(rule, ctx, verdict)


def cookie_problem(set_cookie: str) -> str | None:
    attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    missing = [
        a for a, k in (("Secure", "secure"), ("HttpOnly", "httponly"), ("SameSite", "samesite")) if k not in attributes
    ]
    name = set_cookie.split("=")[0]
    return f"cookie {name} lacks {', '.join(missing)}" if missing else None


@check("headers-cookies")
def cookies(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(o: Observed) -> str | None:
        problems = [p for c in o.all("set-cookie") if (p := cookie_problem(c))]
        return "; ".join(problems) or None

    return _results(rule, ctx, verdict)


@check("headers-cors")
def cors(rule: Rule, ctx: CheckContext) -> list[Result]:
    origin = rule.param("probe_origin")
    if not ctx.policy.http.routes:
        raise NotEvaluated("the policy's [http] routes is empty: no route to send a foreign Origin to")
    out = []
    with ctx.target.http() as client:
        for route in ctx.policy.http.routes:
            response = client.get(route, headers={"Origin": origin})
            allow = response.headers.get("access-control-allow-origin")
            creds = response.headers.get("access-control-allow-credentials", "").lower() == "true"
            problem: str | None = None
            if allow == "*" and creds:
                problem = "Access-Control-Allow-Origin * with credentials"
            elif allow == origin and creds:
                problem = f"reflects the foreign origin {origin} with credentials"
            evidence = problem or f"Allow-Origin {allow!r}, Allow-Credentials {creds}"
            out.append(
                Result(rule, Outcome.FAIL if problem else Outcome.PASS, f"GET {route} (Origin {origin})", evidence)
            )
    return out


# -- Observatory-style grade ------------------------------------------------------------------

GRADES = (
    (100, "A+"),
    (90, "A"),
    (85, "A-"),
    (80, "B+"),
    (70, "B"),
    (65, "B-"),
    (60, "C+"),
    (50, "C"),
    (45, "C-"),
    (40, "D+"),
    (30, "D"),
    (25, "D-"),
)


def score(obs: Observed, allowed_ancestors: Sequence[str] = ()) -> tuple[int, list[str]]:
    """Start at 100 and apply penalties/bonuses like Mozilla Observatory's header tests."""
    points, notes = 100, []

    def adjust(delta: int, why: str) -> None:
        nonlocal points
        points += delta
        notes.append(f"{delta:+d} {why}")

    csp_issue = csp_problem(obs.get("content-security-policy"))
    if obs.get("content-security-policy") is None:
        adjust(-25, "no CSP")
    elif csp_issue:
        adjust(-20, csp_issue)
    if hsts_problem(obs.get("strict-transport-security"), 15552000, False):
        adjust(-20, "HSTS missing or shorter than 6 months")
    if (obs.get("x-content-type-options") or "").lower() != "nosniff":
        adjust(-5, "no nosniff")
    if frame_problem(obs.all("x-frame-options"), obs.all("content-security-policy"), allowed_ancestors):
        adjust(-20, "framing allowed")
    referrer = (obs.get("referrer-policy") or "").lower()
    if referrer in ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"):
        adjust(5, "private Referrer-Policy")
    elif referrer in ("unsafe-url", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin"):
        adjust(-5, f"Referrer-Policy {referrer}")
    if any(cookie_problem(c) for c in obs.all("set-cookie")):
        adjust(-20, "cookie without Secure/HttpOnly/SameSite")
    return max(points, 0), notes


def grade(points: int) -> str:
    return next((g for floor, g in GRADES if points >= floor), "F")


def _allowed_ancestors(ctx: CheckContext) -> list[str]:
    """The grade deducts for framing exactly as the frame rule judges it."""
    rule = ctx.policy.rules.get("headers-frame-options")
    return list(rule.param("allowed_frame_ancestors")) if rule else []


@check("headers-grade")
def header_grade(rule: Rule, ctx: CheckContext) -> list[Result]:
    out = []
    for obs in _surface_or_skip(ctx):
        if isinstance(obs, Missing):
            out.append(_not_evaluated(rule, obs))
            continue
        points, notes = score(obs, _allowed_ancestors(ctx))
        ok = points >= rule.param("min_score")
        evidence = f"score {points} grade {grade(points)} ({', '.join(notes) or 'no deductions'})"
        out.append(Result(rule, Outcome.PASS if ok else Outcome.FAIL, obs.label, evidence))
    return out
