"""The Observatory scorer on fixed inputs (the differential tests against the real scanner are in
tests/integration/test_observatory_diff.py), and the headers-grade rule's two scores and gate."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from stackcheck.compliance import headers, observatory, runner
from stackcheck.compliance.model import HttpSurface, Outcome, Policy, Result
from stackcheck.compliance.observatory import Expectation as E
from stackcheck.compliance.observatory import Hop, Response, Retrieval, ScanTest
from stackcheck.compliance.runner import CheckContext
from stackcheck.report.common import header_grades
from tests.unit.compliance_fakes import MockTarget

CLEAN = (
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
    ("content-type", "application/json"),
)
REDIRECTED = (Hop("http://localhost/", 301), Hop("https://localhost/", 200))


def retrieval(headers: tuple[tuple[str, str], ...] = CLEAN, http: tuple[Hop, ...] | None = REDIRECTED) -> Retrieval:
    return Retrieval("localhost", (Response("https://localhost/", 200, headers, "{}"),), http, None)


def without(name: str) -> tuple[tuple[str, str], ...]:
    return tuple(h for h in CLEAN if h[0] != name)


def replaced(name: str, value: str) -> tuple[tuple[str, str], ...]:
    return (*without(name), (name, value))


def result(score: observatory.Score, test: ScanTest) -> E:
    return next(t.result for t in score.tests if t.test is test)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (retrieval(), (115, "A+")),
        (retrieval(without("strict-transport-security")), (80, "B+")),
        (retrieval(replaced("strict-transport-security", "max-age=3600")), (105, "A+")),
        (
            retrieval((*without("x-frame-options")[:-3], ("content-security-policy", "default-src 'self'"))),
            (80, "B+"),
        ),
        (retrieval(http=(Hop("http://localhost/", 200),)), (80, "B+")),
    ],
    ids=["clean", "no HSTS", "HSTS 3600", "no framing protection", "HTTP 200"],
)
def test_the_issue_table_scores(config: Retrieval, expected: tuple[int, str]) -> None:
    score = observatory.scan(config)
    assert (score.score, score.grade) == expected, score.deductions()


def test_bonuses_count_only_from_an_a_without_them() -> None:
    # -20 (no HSTS) leaves 80 without bonuses: the +15 of bonuses are not added.
    score = observatory.scan(retrieval(without("strict-transport-security")))
    assert sum(t.modifier for t in score.tests if t.modifier > 0) == 15
    assert score.score == 80


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        *((135, "A+"), (100, "A+"), (99, "A"), (90, "A"), (89, "A-"), (85, "A-"), (80, "B+"), (79, "B"), (70, "B")),
        *((65, "B-"), (60, "C+"), (50, "C"), (45, "C-"), (40, "D+"), (30, "D"), (25, "D-"), (24, "F"), (0, "F")),
    ],
)
def test_grade_boundaries(score: int, grade: str) -> None:
    assert observatory.grade_for(score) == grade


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=abc", E.HSTS_AT_LEAST_SIX_MONTHS),  # parseInt's NaN is never "less than"
        ("max-age=15551999", E.HSTS_LESS_THAN_SIX_MONTHS),
        ("max-age=1, max-age=2", E.HSTS_INVALID),
        ("includeSubDomains", E.HSTS_INVALID),
    ],
)
def test_hsts_quirks(value: str, expected: E) -> None:
    assert result(observatory.scan(retrieval(replaced("strict-transport-security", value))), ScanTest.HSTS) is expected


def test_two_csp_headers_are_one_joined_policy_as_node_hands_them_over() -> None:
    headers = (*CLEAN, ("content-security-policy", "default-src 'none'"))
    # "..., default-src 'none'" is one policy whose frame-ancestors has the sources "'none',", ...
    score = observatory.scan(retrieval(headers))
    assert result(score, ScanTest.CSP) is E.CSP_NO_UNSAFE


def test_an_expired_cookie_on_a_redirect_is_gone_from_the_jar() -> None:
    chain = (
        Response("https://localhost/", 302, (("location", "/home"), ("set-cookie", "prefs=1; Max-Age=0"))),
        Response("https://localhost/home", 200, CLEAN),
    )
    assert result(observatory.scan(Retrieval("localhost", chain, REDIRECTED, None)), ScanTest.COOKIES) is (
        E.COOKIES_NOT_FOUND
    )
    kept = Retrieval("localhost", (chain[1], chain[1]), REDIRECTED, None)
    kept = dataclasses.replace(kept, https_chain=(Response(chain[1].url, 200, (*CLEAN, ("set-cookie", "prefs=1"))),))
    assert result(observatory.scan(kept), ScanTest.COOKIES) is E.COOKIES_WITHOUT_SECURE_BUT_HSTS


# -- the rule -------------------------------------------------------------------------------------------

POLICY = dataclasses.replace(
    Policy.load(), http=HttpSurface(routes=("/",), not_found_path="/missing", error_statuses=(404,))
)


def edge(request: httpx.Request) -> httpx.Response:
    """A clean HTTPS edge whose 404 has no security headers; plain HTTP redirects to it."""
    if request.url.scheme == "http":
        return httpx.Response(301, headers={"location": f"https://{request.url.host}/"})
    if request.url.path == "/missing":
        return httpx.Response(404, headers={"content-type": "text/html"}, text="<h1>404</h1>")
    return httpx.Response(200, headers=dict(CLEAN), text="{}")


def grade_results(gate: str, handler: object = edge) -> list[Result]:
    rule = dataclasses.replace(POLICY.rules["headers-grade"], params={"min_score": 90, "gate": gate})
    ctx = CheckContext(MockTarget(handler), None, POLICY)  # type: ignore[arg-type]
    return runner.evaluate(rule, ctx)


def test_the_rule_names_both_scores_and_gates_on_the_worst_route() -> None:
    [res] = grade_results("worst-route")
    assert res.outcome is Outcome.FAIL, res.evidence
    assert res.evidence.startswith("gate worst-route >= 90: Observatory score ")
    assert "Observatory score 115 grade A+ on GET https://edge.invalid/ -> 200" in res.evidence
    assert "worst-route score 30 grade D on error 404 (/missing -> 404)" in res.evidence
    assert header_grades([{"rule": "headers-grade", "subject": res.subject, "evidence": res.evidence}]) == [
        ("Observatory score: GET https://edge.invalid/ -> 200", 115, "A+"),
        ("worst-route score: error 404 (/missing -> 404)", 30, "D"),
    ]


def test_gating_on_the_observatory_score_passes_what_the_mdn_scanner_passes() -> None:
    [res] = grade_results("observatory")
    assert res.outcome is Outcome.PASS, res.evidence
    assert "worst-route score 30 grade D" in res.evidence  # still named, not gated on


def test_a_broken_edge_fails_the_observatory_gate() -> None:
    def no_hsts(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http" or request.url.path == "/missing":
            return edge(request)
        return httpx.Response(200, headers=dict(without("strict-transport-security")), text="{}")

    [res] = grade_results("observatory", no_hsts)
    assert res.outcome is Outcome.FAIL
    assert "Observatory score 80 grade B+" in res.evidence
    assert "hsts-not-implemented -20" in res.evidence


def test_an_entry_route_the_scanner_refuses_is_not_evaluated_for_the_observatory_gate() -> None:
    [res] = grade_results("observatory", lambda request: httpx.Response(500, headers=dict(CLEAN)))
    assert res.outcome is Outcome.NOT_EVALUATED
    assert "unexpected HTTP status code 500" in res.evidence


def test_headers_grade_keeps_the_responses_it_fetched() -> None:
    ctx = CheckContext(MockTarget(edge), None, POLICY)
    first = headers.observatory_retrieval(ctx)
    assert headers.observatory_retrieval(ctx) is first
    assert first.preflight is not None
    assert first.http_chain == (Hop("http://edge.invalid/", 301), Hop("https://edge.invalid/", 200))
