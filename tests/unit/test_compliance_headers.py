"""Header rules without a stack: the framing verdict, and error responses that did not come
(a 429 never provoked, a 5xx never produced) are never judged as the error page."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from stackcheck.compliance import headers, runner
from stackcheck.compliance.headers import Inapplicable, Missing, Observed, frame_problem
from stackcheck.compliance.model import Area, HttpSurface, Outcome, Policy
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import DEFAULT_STACK
from stackcheck.target import HttpTarget
from tests.unit.compliance_fakes import FakeStack, MockTarget, fake_handle

POLICY = Policy.load()
REFERENCE_POLICY = Policy.load(DEFAULT_STACK.parent / "policy.toml")
# One result per response of the surface (cors sends requests of its own; the grade scores the entry).
SURFACE_RULES = [r for r in POLICY.area(Area.HEADERS) if r.id not in ("headers-cors", "headers-grade")]
FOREIGN = "https://stackcheck-foreign-origin.invalid"


@pytest.mark.parametrize(
    ("xfo", "csp", "allowed"),
    [
        (["DENY"], [], ()),
        (["sameorigin"], [], ()),
        (["DENY, SAMEORIGIN"], [], ()),  # conflicting values: browsers block (HTML standard)
        (["DENY", "DENY"], [], ()),
        ([], ["default-src 'none'; frame-ancestors 'none'"], ()),
        ([], ["frame-ancestors 'self'"], ()),
        ([], ["FRAME-ANCESTORS 'NONE'"], ()),
        ([], ["frame-ancestors;"], ()),  # an empty source list matches nothing
        ([], ["frame-ancestors\t'self'"], ()),
        ([], [f"frame-ancestors 'self' {FOREIGN}"], (FOREIGN,)),
        ([], [f"frame-ancestors {FOREIGN}/"], (FOREIGN.upper(),)),
        # Every CSP header is enforced: one restrictive frame-ancestors denies framing.
        ([], ["frame-ancestors https:", "frame-ancestors 'none'"], ()),
        (["ALLOW-FROM https://x.invalid"], ["frame-ancestors 'none'"], ()),
    ],
)
def test_framing_limited_to_none_self_or_allowed_origins_passes(
    xfo: list[str], csp: list[str], allowed: tuple[str, ...]
) -> None:
    assert frame_problem(xfo, csp, allowed) is None


@pytest.mark.parametrize(
    ("xfo", "csp", "allowed", "named"),
    [
        # A loose frame-ancestors is what browsers enforce; X-Frame-Options is ignored next to it.
        (["DENY"], ["frame-ancestors https:"], (), "lets https: frame"),
        (["DENY"], [f"default-src 'none'; frame-ancestors {FOREIGN}"], (), f"lets {FOREIGN} frame"),
        ([], ["frame-ancestors *"], (), "lets * frame"),
        ([], ["frame-ancestors 'self' https://*.example.com"], (), "lets https://*.example.com frame"),
        ([], [f"frame-ancestors 'none' {FOREIGN}"], (), f"lets {FOREIGN} frame"),  # 'none' ignored beside others
        ([], ["frame-ancestors https://partner.invalid"], (FOREIGN,), "lets https://partner.invalid frame"),
        ([], ["frame-ancestors http:"], (), "lets http: frame"),
        ([], ["frame-ancestors partner.invalid"], (), "lets partner.invalid frame"),
        ([], ["frame-ancestors https:", "default-src 'self'"], (), "lets https: frame"),
        (["ALLOW-FROM https://x.invalid"], [], (), "X-Frame-Options ['ALLOW-FROM https://x.invalid']"),
        (["ALLOWALL"], [], (), "framing not denied"),
        ([], ["default-src 'none'"], (), "no CSP frame-ancestors"),
        ([], [], (), "framing not denied: X-Frame-Options [], no CSP frame-ancestors"),
    ],
)
def test_framing_open_to_other_origins_fails_and_names_them(
    xfo: list[str], csp: list[str], allowed: tuple[str, ...], named: str
) -> None:
    problem = frame_problem(xfo, csp, allowed)
    assert problem is not None
    assert named in problem


def test_a_loose_frame_ancestors_says_x_frame_options_does_not_help() -> None:
    problem = frame_problem(["DENY"], ["frame-ancestors https:"])
    assert problem is not None
    assert "X-Frame-Options ['DENY'] is ignored by browsers when frame-ancestors is set" in problem
    assert "policy allowed_frame_ancestors []" in problem


def test_the_policy_allows_no_framing_origin_by_default() -> None:
    assert POLICY.rules["headers-frame-options"].param("allowed_frame_ancestors") == []


# -- error responses that did not come -----------------------------------------------------


def counting_handler(status_for: Callable[[int], int]) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    sent: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(status_for(len(sent)), headers={"X-Content-Type-Options": "nosniff"})

    return handle, sent


def test_no_429_in_the_burst_is_missing_never_the_last_answer() -> None:
    handle, sent = counting_handler(lambda _: 200)
    with MockTarget(handle).http() as client:
        got = headers._provoke_429(client, "/api/cards", max_requests=50)
    assert got == Missing("error 429", "no 429 after 50 requests to /api/cards (statuses 200: 50)")
    assert len(sent) == 50


def test_a_404_probe_answered_429_waits_for_the_limiter_and_never_judges_the_429() -> None:
    handle, sent = counting_handler(lambda n: 429 if n <= 2 else 404)
    with MockTarget(handle).http() as client:
        got = headers._fetch_404(client, "/nope", wait_s=0)
    assert isinstance(got, Observed)
    assert (got.label, got.status, len(sent)) == ("error 404 (/nope -> 404)", 404, 3)
    handle, sent = counting_handler(lambda _: 429)
    with MockTarget(handle).http() as client:
        missing = headers._fetch_404(client, "/nope", tries=3, wait_s=0)
    assert missing == Missing("error 404", "GET /nope of an unknown route never answered 404 (statuses 429: 3)")


def test_the_first_429_of_the_burst_is_the_429_page() -> None:
    handle, sent = counting_handler(lambda n: 429 if n >= 5 else 200)
    with MockTarget(handle).http() as client:
        got = headers._provoke_429(client, "/api/cards", max_requests=50)
    assert isinstance(got, Observed)
    assert (got.label, got.status, len(sent)) == ("error 429 (/api/cards -> 429)", 429, 5)


def test_an_edge_that_answers_200_everywhere_has_no_429_or_502_page_to_judge() -> None:
    """An unlimited edge that serves every route itself: the old code labelled its 200s
    "error 429" and "error 502" and judged them as error pages."""
    target = MockTarget(lambda _: httpx.Response(200, headers={"X-Content-Type-Options": "nosniff"}))
    backend = fake_handle("backend", docker=FakeDocker())
    stack = FakeStack([backend], spec=edge_spec(depends_on=["backend"]), target=target)
    ctx = CheckContext(target, stack, REFERENCE_POLICY)  # type: ignore[arg-type]
    seen = headers.surface(ctx)
    assert backend.docker.calls == ["stop", "start"]
    missing = [s for s in seen if isinstance(s, Missing)]
    assert [m.label for m in missing] == ["error 404", "error 429", "error 502"]
    assert missing[0].reason == (
        "GET /api/stackcheck-no-such-route of an unknown route never answered 404 (statuses 200: 1)"
    )
    assert missing[1].reason == "no 429 after 200 requests to /api/prompt-cards (statuses 200: 200)"
    assert missing[2].reason == "GET /api/health answered 200 with the upstreams stopped, not 5xx"


@pytest.mark.parametrize("rule", SURFACE_RULES, ids=[r.id for r in SURFACE_RULES])
def test_every_surface_rule_reports_a_missing_error_page_not_evaluated(rule: Any) -> None:
    ctx = CheckContext(HttpTarget("https://edge.invalid", booted=True), None, POLICY)
    good = (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"))
    ctx.cache["headers.surface"] = [
        Observed("GET / -> 200", 200, good),
        Missing("error 429", "no 429 after 200 requests to /api/prompt-cards (statuses 200: 200)"),
    ]
    results = runner.evaluate(rule, ctx)
    by_subject = {r.subject: r for r in results}
    assert by_subject["error 429"].outcome is Outcome.NOT_EVALUATED
    assert by_subject["error 429"].evidence.startswith("no 429 after 200 requests")
    assert set(by_subject) == {"GET / -> 200", "error 429"}


@pytest.mark.parametrize("rule", POLICY.area(Area.HEADERS), ids=[r.id for r in POLICY.area(Area.HEADERS)])
def test_a_policy_with_no_route_and_no_error_response_evaluates_nothing(rule: Any) -> None:
    policy = dataclasses.replace(POLICY, http=HttpSurface(routes=(), error_statuses=()))
    target = MockTarget(lambda request: pytest.fail(f"no request should be sent, got {request.url}"))
    [result] = runner.evaluate(rule, CheckContext(target, None, policy))
    assert result.outcome is Outcome.NOT_EVALUATED
    assert "[http]" in result.evidence


class FakeDocker:
    """A container that records being stopped and started, and is healthy at once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.attrs: dict[str, Any] = {"State": {"Running": True, "Health": {"Status": "healthy"}}}

    def stop(self, timeout: int) -> None:
        self.calls.append("stop")

    def start(self) -> None:
        self.calls.append("start")

    def reload(self) -> None:
        pass


def edge_spec(depends_on: list[str]) -> Any:
    nginx = SimpleNamespace(depends_on=depends_on)
    return SimpleNamespace(entry_service="nginx", services={"nginx": nginx}, links={}, health_path="/health")


def test_an_entrypoint_without_upstreams_has_no_502_page_and_stops_nothing() -> None:
    """A one-service stack: nothing to stop, no wait; every surface rule says so in its evidence."""
    target = MockTarget(
        lambda request: httpx.Response(404 if request.url.path != "/" else 200, headers={"X-Frame-Options": "DENY"})
    )
    stack = FakeStack(spec=edge_spec(depends_on=[]), target=target)
    ctx = CheckContext(target, stack, POLICY)  # type: ignore[arg-type]
    seen = headers.surface(ctx)
    assert [type(s).__name__ for s in seen] == ["Observed", "Observed", "Inapplicable", "Inapplicable"]
    assert seen[3] == Inapplicable("error 502", "not applicable: the entrypoint has no upstream service")
    assert seen[2].label == "error 429"  # the default policy names no rate-limited route
    results = runner.evaluate(POLICY.rules["headers-frame-options"], ctx)
    assert [(r.subject, r.outcome) for r in results] == [
        ("GET / -> 200", Outcome.PASS),
        ("error 404 (/stackcheck-no-such-route -> 404)", Outcome.PASS),
    ]
    assert "error 502: not applicable: the entrypoint has no upstream service" in results[0].evidence
    assert "error 429: not applicable: the policy's [http] names no rate_limited_path" in results[0].evidence


def test_a_failed_observation_is_computed_once_per_run() -> None:
    """A surface whose fetch fails (e.g. upstreams that never come back) fails every header rule
    at once with the same error instead of waiting for it again, rule after rule."""
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    ctx = CheckContext(MockTarget(handle), None, POLICY)
    results = [r for rule in SURFACE_RULES for r in runner.evaluate(rule, ctx)]
    assert {r.outcome for r in results} == {Outcome.ERROR}
    assert len(calls) == 1


def test_the_429_probe_leaves_the_refill_wait_to_what_needs_the_limiter_next() -> None:
    """The refill comes from the policy's rate-limit rule on that path (burst / rate + 0.5 s), not
    a fixed sleep inside the probe; a path no rule names gets 2.5 s (10 r/s, burst 20)."""
    assert headers._limiter_refill_s(REFERENCE_POLICY, "/api/prompt-cards") == 20 / 10 + 0.5
    assert headers._limiter_refill_s(REFERENCE_POLICY, "/api/auth/login") == 5 / 2 + 0.5
    assert headers._limiter_refill_s(POLICY, "/api/cards") == headers.DEFAULT_REFILL_S
    handle, _ = counting_handler(lambda n: 429 if n >= 5 else 200)
    started = time.monotonic()
    with MockTarget(handle).http() as client:
        headers._provoke_429(client, "/api/cards", max_requests=50)
    assert time.monotonic() - started < 1.0, "the probe itself must not sleep out the refill"
