"""HTTP header rules, evaluated on every route family and on error responses (404/429/502).

The responses are fetched once per run and shared by all header rules. The 429 comes from a
burst over the rate limit (when the policy names a rate_limited_path); the 502 from stopping
the entrypoint's upstream services (the entry service's depends_on) for a moment: booted stacks
with such upstreams only; they are started again and awaited before the check returns. An
error page that cannot exist here is named, with why, in the evidence of every header rule.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from urllib.parse import urlsplit

import httpx

from stackcheck.compliance import observatory
from stackcheck.compliance.model import Area, Outcome, Policy, Result, Rule
from stackcheck.compliance.rate_limits import refill_s
from stackcheck.compliance.runner import CheckContext, NotEvaluated, check, not_applicable
from stackcheck.errors import StackError
from stackcheck.stack import ServiceHandle, Stack, container_health

VERSION = re.compile(r"\d+\.\d+|/\d")


@dataclass(frozen=True)
class Observed:
    """One response of the surface: where it came from and its headers (lower-cased names)."""

    label: str  # e.g. "GET /api/health -> 200" or "error 429"
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str = ""  # for the Observatory score's Subresource Integrity test

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass(frozen=True)
class Missing:
    """An error response the policy asks for that the target did not produce: nothing to judge."""

    label: str  # e.g. "error 429"
    reason: str  # what was sent and seen instead


@dataclass(frozen=True)
class Inapplicable:
    """An error response the policy asks for that this target cannot produce (no upstream to
    stop, no rate-limited route): nothing to judge, said in the evidence of the others."""

    label: str  # e.g. "error 502"
    reason: str  # "not applicable: ..."

    def note(self) -> str:
        return f"{self.label}: {self.reason}"


Surface = list[Observed | Missing | Inapplicable]


def _observe(label: str, response: httpx.Response) -> Observed:
    headers = tuple((k.lower(), v) for k, v in response.headers.multi_items())
    return Observed(label, response.status_code, headers, response.content.decode("utf-8", "replace"))


def surface(ctx: CheckContext) -> Surface:
    return list(ctx.memo("headers.surface", lambda: _fetch_surface(ctx)))


def upstream_services(stack: Stack) -> list[str]:
    """The services the entrypoint's service depends on: what a 502 comes from."""
    entry = stack.spec.entry_service
    return list(stack.spec.services[entry].depends_on) if entry and entry in stack.spec.services else []


def _fetch_surface(ctx: CheckContext) -> Surface:
    http = ctx.policy.http
    seen: Surface = []
    with ctx.http_target().http(follow_redirects=False) as client:
        for route in http.routes:
            response = client.get(route)
            seen.append(_observe(f"GET {route} -> {response.status_code}", response))
        if 404 in http.error_statuses:
            seen.append(_fetch_404(client, http.not_found_path))
        refilled_at = 0.0  # when the limiter the 429 probe drained is full again
        if 429 in http.error_statuses:
            if http.rate_limited_path:
                seen.append(_provoke_429(client, http.rate_limited_path))
                refilled_at = time.monotonic() + _limiter_refill_s(ctx.policy, http.rate_limited_path)
            else:
                reason = (
                    "not applicable: the policy's [http] names no rate_limited_path (set it to a rate-limited route)"
                )
                seen.append(Inapplicable("error 429", reason))
        if 502 in http.error_statuses:
            seen.append(_provoke_502(ctx.stack, client, http.routes[-1] if http.routes else "/", refilled_at))
    # A full bucket for whatever runs next: the 502 probe's stop and start of upstreams already
    # took part of the wait, so it is no longer slept in full after the 429.
    time.sleep(max(0.0, refilled_at - time.monotonic()))
    return seen


DEFAULT_REFILL_S = 2.5


def _limiter_refill_s(policy: Policy, path: str) -> float:
    """The refill time of the policy's rate-limit rule on ``path``; 2.5 s (10 r/s, burst 20) when
    no rule names it."""
    rules = [r for r in policy.area(Area.RATE_LIMITS) if r.params.get("path") == path]
    return max((refill_s(r) for r in rules), default=DEFAULT_REFILL_S)


def _provoke_502(
    stack: Stack | None, client: httpx.Client, route: str, refilled_at: float = 0.0
) -> Observed | Missing | Inapplicable:
    """GET ``route`` with the entrypoint's upstream services stopped: the edge's error page (once
    the limiter is full again at ``refilled_at``: a 429 is no 502 page)."""
    if stack is None:
        return Inapplicable("error 502", "not applicable: no booted stack (an external target's upstreams stay up)")
    if not upstream_services(stack):
        return Inapplicable("error 502", "not applicable: the entrypoint has no upstream service")
    with upstreams_stopped(stack):
        time.sleep(max(0.0, refilled_at - time.monotonic()))
        response = client.get(route)
    # Any 5xx from the edge with its upstream gone is an error page worth checking; a success
    # (a route the edge serves itself) is no error page and is not judged as one.
    if response.is_server_error:
        return _observe(f"error 502 (upstream stopped -> {response.status_code})", response)
    return Missing("error 502", f"GET {route} answered {response.status_code} with the upstreams stopped, not 5xx")


def _fetch_404(client: httpx.Client, path: str, tries: int = 5, wait_s: float = 1.0) -> Observed | Missing:
    """The 404 page of an unknown route; Missing when the edge answers something else, so that no
    other answer (a 200 catch-all, a 429 from a limiter another check just drained) is judged as it.
    A 429 is retried after ``wait_s``: the limiter refills, the route is still unknown."""
    statuses: Counter[int] = Counter()
    for attempt in range(tries):
        response = client.get(path)
        if response.status_code == 404:
            return _observe(f"error 404 ({path} -> 404)", response)
        statuses[response.status_code] += 1
        if response.status_code != 429:
            break
        if attempt < tries - 1:
            time.sleep(wait_s)
    seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    return Missing("error 404", f"GET {path} of an unknown route never answered 404 (statuses {seen})")


def _provoke_429(client: httpx.Client, path: str, max_requests: int = 200) -> Observed | Missing:
    """The first 429 of a burst of at most ``max_requests`` to ``path``; Missing when none came,
    so that no other answer is ever judged as the 429 page. The limiter is left drained: the
    caller waits for its refill (``_limiter_refill_s``) before it needs it again."""
    statuses: Counter[int] = Counter()
    for _ in range(max_requests):
        response = client.get(path)
        if response.status_code == 429:
            return _observe(f"error 429 ({path} -> 429)", response)
        statuses[response.status_code] += 1
    seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    return Missing("error 429", f"no 429 after {max_requests} requests to {path} (statuses {seen})")


@contextlib.contextmanager
def upstreams_stopped(stack: Stack, timeout: float = 60.0) -> Iterator[None]:
    """Stop every instance the entrypoint depends on; start and await them again on exit."""
    handles = [h for dep in upstream_services(stack) for h in stack.instances(dep)]
    for handle in handles:
        handle.docker.stop(timeout=1)
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM (stackcheck.interrupt): the stack is removed next
        interrupted = True
        raise
    finally:
        for handle in handles:
            handle.docker.start()
        if not interrupted:  # waiting 5 s for backends nothing will use would hold the removal up
            _await_healthy(stack, handles, timeout)


def _await_healthy(stack: Stack, handles: list[ServiceHandle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with stack.http(timeout=3) as client:
        while time.monotonic() < deadline:
            healthy = all(container_health(h.docker) == "healthy" for h in handles)
            # nginx marks failed upstreams down for fail_timeout: wait until it routes again.
            if healthy and client.get(stack.spec.health_path).status_code == 200:
                return
            time.sleep(0.1)
    raise StackError(f"upstreams of the entrypoint did not come back within {timeout:.0f}s", "read their logs")


def _not_evaluated(rule: Rule, missing: Missing) -> Result:
    return Result(rule, Outcome.NOT_EVALUATED, missing.label, missing.reason)


def _surface_or_skip(rule: Rule, ctx: CheckContext) -> Surface:
    seen = surface(ctx)
    judged = [s for s in seen if not isinstance(s, Inapplicable)]
    if not judged:
        notes = "".join(f" ({s.note()})" for s in seen if isinstance(s, Inapplicable))
        raise not_applicable(
            rule,
            f"the policy's [http] names no route and no error response to fetch{notes}",
            'list routes in [http] routes = ["/"]',
        )
    return seen


def _with_notes(results: list[Result], seen: Surface) -> list[Result]:
    """The first result's evidence names the error pages that cannot exist here, and why."""
    notes = "; ".join(s.note() for s in seen if isinstance(s, Inapplicable))
    if not notes or not results:
        return results
    first = results[0]
    return [replace(first, evidence=f"{first.evidence} [{notes}]"), *results[1:]]


def _results(rule: Rule, ctx: CheckContext, verdict: Callable[[Observed], str | None]) -> list[Result]:
    out = []
    seen = _surface_or_skip(rule, ctx)
    for obs in seen:
        if isinstance(obs, Inapplicable):
            continue
        if isinstance(obs, Missing):
            out.append(_not_evaluated(rule, obs))
            continue
        problem = verdict(obs)
        out.append(
            Result(rule, Outcome.FAIL if problem else Outcome.PASS, obs.label, problem or _ok_evidence(obs, rule))
        )
    return _with_notes(out, seen)


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
    base_url = ctx.http_target().base_url
    if not base_url.startswith("https://"):
        return [Result(rule, Outcome.FAIL, base_url, "the target is not served over HTTPS")]
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
        raise not_applicable(
            rule,
            "the policy's [http] routes is empty: no route to send a foreign Origin to",
            "list them in [http] routes",
        )
    out = []
    with ctx.http_target().http() as client:
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


# -- Observatory score ------------------------------------------------------------------------
# Two numbers from one algorithm (stackcheck.compliance.observatory, the MDN HTTP Observatory's
# scoring): the Observatory score is what the MDN scanner gives the entry route (https://HOST/ with
# its redirects, the plain-HTTP chain and a CORS preflight); the worst-route score is the lowest
# of that and of every route and error page fetched above, each judged as the page.


class Gate(StrEnum):
    OBSERVATORY = "observatory"
    WORST_ROUTE = "worst-route"


def _plain_http_origin(ctx: CheckContext) -> str | None:
    """Where a booted stack's edge answers plain HTTP on 127.0.0.1 (its port other than the entry's)."""
    stack = ctx.stack
    entry = urlsplit(stack.spec.entrypoint_url or "") if stack else None
    service = entry.hostname if entry else None
    if stack is None or entry is None or service is None or service not in stack.spec.services:
        return None
    plain = [p for p in stack.spec.services[service].ports if p != entry.port]
    return f"http://127.0.0.1:{stack.service(service).port(plain[0])}" if plain else None


def observatory_retrieval(ctx: CheckContext) -> observatory.Retrieval:
    """What the MDN scanner fetches for the target's host (once per run)."""

    def fetch() -> observatory.Retrieval:
        target = ctx.http_target()
        with target.http(follow_redirects=False) as client:
            if ctx.stack is None or not target.booted:
                # The scanner takes HOST[:PORT] and asks https:// and http:// of it.
                host = urlsplit(target.base_url).netloc
                plain_origin = {f"http://{host}": target.http_url} if target.http_url else None
                return observatory.retrieve(client, f"https://{host}/", f"http://{host}/", host, plain_origin)
            # A booted edge publishes 443 and 80 on mapped ports: ask them as the scanner would ask
            # https://HOST/ and http://HOST/, with that Host, and follow redirects to those origins.
            host = target.host
            origins = {f"https://{host}": target.base_url}
            plain = _plain_http_origin(ctx)
            if plain:
                origins[f"http://{host}"] = plain
            http_url = f"http://{host}/" if plain else None
            return observatory.retrieve(client, f"https://{host}/", http_url, host, origins)

    retrieval: observatory.Retrieval = ctx.memo("headers.observatory", fetch)
    return retrieval


def _score_text(name: str, score: observatory.Score, where: str) -> str:
    return f"{name} {score.score} grade {score.grade} on {where} [{score.deductions()}]"


@check("headers-grade")
def header_grade(rule: Rule, ctx: CheckContext) -> list[Result]:
    gate = Gate(rule.param("gate"))
    seen = _surface_or_skip(rule, ctx)
    entry = observatory_retrieval(ctx)
    where = f"GET {entry.page.url} -> {entry.page.status}"
    refused = observatory.scanner_refuses(entry.page)
    official = observatory.scan(entry)
    scored = [(where, official)] + [
        (
            obs.label,
            observatory.scan(entry.with_page(observatory.Response(entry.page.url, obs.status, obs.headers, obs.body))),
        )
        for obs in seen
        if isinstance(obs, Observed)
    ]
    # An error page the target did not produce leaves the worst-route score unjudged there.
    out = [Result(rule, Outcome.NOT_EVALUATED, m.label, m.reason) for m in seen if isinstance(m, Missing)]
    worst_where, worst = min(scored, key=lambda s: s[1].score)
    if refused and gate is Gate.OBSERVATORY:
        raise NotEvaluated(f"the MDN scanner grades no answer like {where}: {refused}")
    observatory_text = (
        f"no Observatory score ({where}: the scanner refuses: {refused})"
        if refused
        else _score_text("Observatory score", official, where)
    )
    judged = worst if gate is Gate.WORST_ROUTE else official
    ok = judged.score >= rule.param("min_score")
    evidence = (
        f"gate {gate.value} >= {rule.param('min_score')}: {observatory_text}; "
        f"{_score_text('worst-route score', worst, worst_where)} of {len(scored)} responses "
        f"({observatory.SCANNER_PACKAGE} {observatory.SCANNER_VERSION}, algorithm v{observatory.ALGORITHM_VERSION})"
    )
    return _with_notes(
        [Result(rule, Outcome.PASS if ok else Outcome.FAIL, f"{gate.value} score", evidence), *out], seen
    )
