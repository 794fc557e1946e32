"""The table of issue 15, reproduced on real nginx edges: for each configuration the pinned MDN
HTTP Observatory scanner and stackcheck's headers-grade give the same Observatory score, grade
and per-test results, and those are the scanner's numbers of the issue.

The scanner scans ``localhost`` on 443 and 80 (forwarded to the edge's published ports), so the
edge's own redirect (https://$host/) leads it where it leads a browser."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from stackcheck.compliance import headers, observatory, runner
from stackcheck.compliance.model import HttpSurface, Outcome
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import Stack
from tests.integration.observatory_harness import forwarded, install_scanner, run_scanner
from tests.integration.test_compliance_variants import HSTS, NGINX_CONF, POLICY, edge_stack, only, with_params

pytestmark = [pytest.mark.docker, pytest.mark.compliance]

CSP = """    add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;\n"""
XFO = '    add_header X-Frame-Options "DENY" always;\n'
REDIRECT = "    location / { return 301 https://$host$request_uri; }\n"
# The clean edge: the reference headers with CSP default-src 'self'.
CLEAN = NGINX_CONF.replace(CSP, CSP.replace("default-src 'none'", "default-src 'self'"))
CLEAN_CSP = CSP.replace("default-src 'none'", "default-src 'self'")


def variant(*edits: tuple[str, str]) -> str:
    conf = CLEAN
    for old, new in edits:
        assert old in conf, f"the clean edge config no longer has {old!r}"
        conf = conf.replace(old, new)
    return conf


CORS = (
    '    add_header Access-Control-Allow-Origin "*" always;\n'
    '    add_header Access-Control-Allow-Credentials "true" always;\n'
)

# configuration -> (nginx config, the MDN scanner's score and grade from the issue)
CONFIGURATIONS = {
    "clean edge": (CLEAN, 115, "A+"),
    "no HSTS": (variant((HSTS, "")), 80, "B+"),
    "HSTS max-age 3600": (variant((HSTS, HSTS.replace("max-age=31536000", "max-age=3600"))), 105, "A+"),
    "no X-Frame-Options and no frame-ancestors": (
        variant((XFO, ""), (CLEAN_CSP, CLEAN_CSP.replace("; frame-ancestors 'none'", ""))),
        80,
        "B+",
    ),
    "HTTP answers 200 instead of redirecting": (
        variant((REDIRECT, '    location / { default_type text/plain; return 200 "plain\\n"; }\n')),
        80,
        "B+",
    ),
    "server_tokens on": (variant((HSTS, "    server_tokens on;\n" + HSTS)), 115, "A+"),
    "CORS * with credentials": (variant((HSTS, CORS + HSTS)), 115, "A+"),
}
# The grade looks at the entry route and a 404 only (no 429 burst, no upstream stop).
SURFACE = HttpSurface(routes=("/",), not_found_path=POLICY.http.not_found_path, error_statuses=(404,))


@pytest.fixture(scope="module")
def scanner() -> Path:
    return install_scanner()


def stackcheck_and_scanner(stack: Stack, scanner: Path, gate: str) -> tuple[str, dict[str, object], dict[str, object]]:
    rule = with_params("headers-grade", gate=gate)
    ctx = CheckContext(stack.target(), stack, dataclasses.replace(only(rule), http=SURFACE))
    [result] = [r for r in runner.evaluate(rule, ctx) if r.outcome is not Outcome.NOT_EVALUATED]
    score = observatory.scan(headers.observatory_retrieval(ctx))  # the retrieval the rule judged
    ours = {
        "score": score.score,
        "grade": score.grade,
        "tests": {t.test.value: (t.result.value, t.modifier, t.passed) for t in score.tests},
    }
    edge = stack.service("nginx")
    with forwarded({443: edge.port(8443), 80: edge.port(8080)}):
        [raw] = run_scanner(scanner, ["localhost"], stack.tls_files["ca"])
    assert "error" not in raw, raw
    theirs = {
        "score": raw["score"],
        "grade": raw["grade"],
        "tests": {k: (t["result"], t["scoreModifier"], t["pass"]) for k, t in raw["tests"].items()},
    }
    return result.evidence, ours, theirs


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_observatory_score_is_the_scanners_on_a_real_edge(tmp_path: Path, scanner: Path, name: str) -> None:
    conf, expected_score, expected_grade = CONFIGURATIONS[name]
    with Stack(edge_stack(tmp_path, conf)) as stack:
        evidence, ours, theirs = stackcheck_and_scanner(stack, scanner, "observatory")
    row = (
        f"| {name} | MDN Observatory {theirs['grade']} {theirs['score']} | stackcheck {ours['grade']} {ours['score']} |"
    )
    print(f"\n{row}")
    assert ours == theirs, f"{name}: stackcheck {ours} != scanner {observatory.SCANNER_VERSION} {theirs}"
    assert (theirs["score"], theirs["grade"]) == (expected_score, expected_grade), f"{name}: the issue's numbers"
    assert f"Observatory score {expected_score} grade {expected_grade} on GET https://localhost/ -> 200" in evidence


def test_an_error_page_without_headers_is_the_worst_route_not_the_observatory_score(
    tmp_path: Path, scanner: Path
) -> None:
    """nginx's add_header without `always` leaves the 404 bare: D 30 there, while the scanner,
    which never looks at error pages, still gives the entry route A+ 115."""
    conf = re.sub(r"(add_header [^\n]*) always;", r"\1;", CLEAN)
    with Stack(edge_stack(tmp_path, conf)) as stack:
        evidence, ours, theirs = stackcheck_and_scanner(stack, scanner, "worst-route")
    print(f"\n| 404 without headers | MDN Observatory {theirs['grade']} {theirs['score']} | stackcheck: {evidence} |")
    assert ours == theirs
    assert (theirs["score"], theirs["grade"]) == (115, "A+")
    assert "Observatory score 115 grade A+ on GET https://localhost/ -> 200" in evidence
    assert "worst-route score 30 grade D on error 404" in evidence
    assert evidence.startswith("gate worst-route >= 90")
