"""stackcheck's Observatory score is the MDN scanner's: differential tests against the real one.

Hypothesis generates sites (header sets with valid and edge-case CSP, HSTS, cookies, CORS,
X-Frame-Options, Referrer-Policy, CORP, HTML with scripts and meta tags, HTTPS redirects and a
plain-HTTP side that redirects, answers or resets). Each is served on 127.0.0.1 (see
observatory_harness) and scanned by the pinned release of @mdn/mdn-http-observatory and by
stackcheck (its own fetch and scorer); score, grade and every test's result must be identical.
Cases that once disagreed are kept in data/observatory_corpus.json and replayed every run.

STACKCHECK_OBSERVATORY_CASES sets how many cases are generated (CI: 150); --hypothesis-seed
fixes them.
"""

from __future__ import annotations

import json
import os
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from stackcheck.compliance import observatory
from stackcheck.compliance.observatory import CORS_ORIGIN, SCANNER_VERSION
from tests.integration.observatory_harness import Answer, CaseServer, Site, install_scanner, run_scanner

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_observatory_diff")]

CORPUS = Path(__file__).parent / "data" / "observatory_corpus.json"
CASES = int(os.environ.get("STACKCHECK_OBSERVATORY_CASES", "150"))
BATCH = 100  # sites served and scanned per node process


@dataclass(frozen=True)
class Environment:
    scanner: Path
    ca_file: Path
    client: ssl.SSLContext
    server: CaseServer


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    scanner = install_scanner()
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path_factory.mktemp("observatory") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ssl.create_default_context(cafile=str(ca_file))
    with CaseServer(server_context) as server:
        yield Environment(scanner, ca_file, client, server)


# -- cases as data ----------------------------------------------------------------------------------


def site_to_json(site: Site) -> dict[str, Any]:
    def answer(a: Answer) -> dict[str, Any]:
        return {"status": a.status, "headers": [list(h) for h in a.headers], "body": a.body}

    return {
        "https": {path: answer(a) for path, a in site.https.items()},
        "http": None if site.http is None else {path: answer(a) for path, a in site.http.items()},
        "preflight": answer(site.preflight),
    }


def site_from_json(data: dict[str, Any]) -> Site:
    def answer(a: dict[str, Any]) -> Answer:
        return Answer(a["status"], tuple((str(n), str(v)) for n, v in a["headers"]), a["body"])

    http = data["http"]
    return Site(
        {path: answer(a) for path, a in data["https"].items()},
        None if http is None else {path: answer(a) for path, a in http.items()},
        answer(data["preflight"]),
    )


# -- strategies -----------------------------------------------------------------------------------------

SOURCES = [
    "'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'", "'nonce-abc123'",
    "'sha256-abc='", "https:", "http:", "data:", "blob:", "*", "https://*", "http://*.*",
    "https://cdn.example.com", "http://cdn.example.com", "https://cdn.example.com/js/",
    "https://cdn.example.com/js/app.js", "https://cdn.example.com/js/%zz", "ftp://files.example.com",
    "'SELF'", "wss://ws.example.com", "https://a.example.com/a%20b/",
]  # fmt: skip
DIRECTIVES = [
    "default-src", "script-src", "style-src", "object-src", "img-src", "media-src", "frame-ancestors",
    "base-uri", "form-action", "connect-src", "report-uri", "report-to", "upgrade-insecure-requests",
    "DEFAULT-SRC", "sandbox",
]  # fmt: skip


@st.composite
def csp_policy(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from(["abc", "", "  ;  ", "default-src", "img-src"]))
    parts = []
    repeats = draw(st.integers(0, 5)) == 0  # a repeated directive makes the policy invalid
    for directive in draw(st.lists(st.sampled_from(DIRECTIVES), min_size=1, max_size=5, unique=not repeats)):
        sources = draw(st.lists(st.sampled_from(SOURCES), max_size=4))
        parts.append(" ".join([directive, *sources]))
    if draw(st.integers(0, 6)) == 0:
        parts += ["report-uri /a", "report-uri /b"]  # allowed twice, but reported
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";; "]))
    return separator.join(parts) + draw(st.sampled_from(["", ";", "; "]))


HSTS = st.one_of(
    st.builds(
        lambda age, extra: f"max-age={age}{extra}",
        st.sampled_from([0, 1, 3600, 15551999, 15552000, 31536000, 63072000]),
        st.sampled_from(["", "; includeSubDomains", "; includeSubDomains; preload", "; preload", ";"]),
    ),
    st.sampled_from(
        [
            "max-age=abc",
            'max-age="31536000"',
            "includeSubDomains",
            "max-age = 100",
            "MAX-AGE=31536000",
            "max-age=-1",
            "max-age=31536000, max-age=100",
            "",
            " max-age=100 ; includesubdomains",
        ]
    ),
)
COOKIE_NAMES = ["session", "sessionid", "login_token", "csrftoken", "prefs", "__Secure-id", "__Host-id"]
COOKIE_NAMES += ["heroku-session-affinity", "XSRF-TOKEN", "theme"]
COOKIE_ATTRIBUTES = ["Secure", "HttpOnly", "SameSite=Lax", "SameSite=Strict", "SameSite=None", "SameSite=bogus"]
COOKIE_ATTRIBUTES += ["SameSite", "samesite=lax", "Path=/", "Path=/sub", "Domain=localhost", "Domain=example.com"]
COOKIE_ATTRIBUTES += ["Max-Age=0", "Max-Age=3600", "secure", "SameSite=Lax=Strict", "Max-Age=abc"]
COOKIE_ATTRIBUTES += ["Expires=Thu, 01 Jan 1970 00:00:00 GMT", "Expires=Fri, 01 Jan 2100 00:00:00 GMT"]


@st.composite
def set_cookie(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from(["=novalue", "noequals", "a=b;;Secure", "  spaced = v ; HttpOnly"]))
    name = draw(st.sampled_from(COOKIE_NAMES))
    attributes = draw(st.lists(st.sampled_from(COOKIE_ATTRIBUTES), max_size=5))
    if draw(st.booleans()):
        attributes = ["Secure", "HttpOnly", *attributes]
    return "; ".join([f"{name}=v1", *attributes])


def one_of_or_none(*values: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=2)


SCRIPT_SRCS = [
    "/app.js", "app.js", "//cdn.example.com/x.js", "https://cdn.example.com/x.js", "http://cdn.example.com/x.js",
    "https://localhost/x.js", "http://localhost/x.js", "HTTPS://CDN.EXAMPLE.COM/y.js", "https://127.0.0.1/z.js",
    "https://sub.localhost/x.js", "data:text/javascript,1", "",
]  # fmt: skip


@st.composite
def html_body(draw: st.DrawFn) -> str:
    tags = []
    for _ in range(draw(st.integers(0, 3))):
        src = draw(st.sampled_from(SCRIPT_SRCS))
        integrity = draw(st.sampled_from(["", ' integrity="sha384-abc"', ' integrity=""']))
        tags.append(f'<script src="{src}"{integrity}></script>' if src else "<script>var a = 1;</script>")
    if draw(st.booleans()):
        policy = draw(csp_policy()).replace('"', "")
        equiv = draw(st.sampled_from(["Content-Security-Policy", "content-security-policy ", "refresh"]))
        tags.append(f'<meta http-equiv="{equiv}" content="{policy}">')
    if draw(st.booleans()):
        referrer = draw(st.sampled_from(["no-referrer", "unsafe-url", "origin", "bogus", ""]))
        tags.append(f'<meta name="referrer" content="{referrer}">')
    return "<!doctype html><html><head>" + "".join(tags) + "</head><body>hi</body></html>"


@st.composite
def page(draw: st.DrawFn) -> Answer:
    headers: list[tuple[str, str]] = []
    html = draw(st.booleans())
    content_type = draw(
        st.sampled_from(["text/html; charset=utf-8", "text/html", "application/xhtml+xml", "TEXT/HTML"])
        if html
        else st.sampled_from(["application/json", "text/plain"])
    )
    headers.append(("Content-Type", content_type))
    policies = draw(st.sampled_from([0, 1, 1, 1, 2]))
    headers += [
        ("Content-Security-Policy", p) for p in draw(st.lists(csp_policy(), min_size=policies, max_size=policies))
    ]
    if draw(st.integers(0, 5)) == 0:
        headers.append(("Content-Security-Policy-Report-Only", "default-src 'self'; report-uri /r"))
    hsts = draw(st.sampled_from([0, 1, 1, 1, 2]))
    headers += [("Strict-Transport-Security", v) for v in draw(st.lists(HSTS, min_size=hsts, max_size=hsts))]
    headers += [("X-Content-Type-Options", v) for v in draw(one_of_or_none("nosniff", " NoSniff ", "sniff", ""))]
    xfo = one_of_or_none("DENY", "sameorigin", "ALLOW-FROM https://example.com", "allowall", "deny, deny", "")
    headers += [("X-Frame-Options", v) for v in draw(xfo)]
    referrer = one_of_or_none(
        "no-referrer", "same-origin", "strict-origin-when-cross-origin", "unsafe-url", "origin",
        "no-referrer, unsafe-url", "unsafe-url, bogus", "bogus", "",
    )  # fmt: skip
    headers += [("Referrer-Policy", v) for v in draw(referrer)]
    corp = one_of_or_none("same-site", "same-origin", "cross-origin", "Same-Origin", "bogus", "")
    headers += [("Cross-Origin-Resource-Policy", v) for v in draw(corp)]
    headers += [("Set-Cookie", c) for c in draw(st.lists(set_cookie(), max_size=3))]
    status = draw(st.sampled_from([200, 200, 200, 201, 401, 403, 404, 500]))
    body = draw(html_body()) if html else draw(st.sampled_from(['{"ok": true}', "null", "plain text", ""]))
    return Answer(status, tuple(headers), body)


def redirect(status: int, location: str | None, cookies: tuple[str, ...] = ()) -> Answer:
    headers = [("Location", location)] if location is not None else []
    return Answer(status, (*headers, *(("Set-Cookie", c) for c in cookies), ("Content-Type", "text/plain")))


@st.composite
def site(draw: st.DrawFn) -> Site:
    judged = draw(page())
    https: dict[str, Answer] = {"/": judged}
    if draw(st.integers(0, 4)) == 0:  # the page behind an HTTPS redirect that may set a cookie
        cookies = tuple(draw(st.lists(set_cookie(), max_size=1)))
        https = {"/": redirect(draw(st.sampled_from([301, 302, 307])), "/home", cookies), "/home": judged}
    https["/moved"] = redirect(301, "/")
    code = draw(st.sampled_from([301, 302, 307, 308]))
    plain = {"Content-Type": "text/plain"}.items()
    http_mode = draw(
        st.sampled_from(
            [
                *("none", "ok", "https", "off-host", "http-first", "relative-http-first", "stays-http", "via-moved"),
                *("no-location", "loop", "uppercase"),
            ]
        )
    )
    http: dict[str, Answer] | None = {
        "none": None,
        "ok": {"/": Answer(200, tuple(plain), "plain")},
        "https": {"/": redirect(code, "https://localhost:{port}/")},
        "off-host": {"/": redirect(code, "https://127.0.0.1:{port}/")},
        "http-first": {"/": redirect(code, "http://localhost:{port}/next"), "/next": redirect(301, "https://localhost:{port}/")},
        "relative-http-first": {"/": redirect(code, "/next"), "/next": redirect(301, "https://localhost:{port}/")},
        "stays-http": {"/": redirect(code, "http://localhost:{port}/stay"), "/stay": Answer(200)},
        "via-moved": {"/": redirect(code, "https://localhost:{port}/moved")},
        "no-location": {"/": redirect(code, None)},
        "loop": {"/": redirect(302, "/")},
        "uppercase": {"/": redirect(code, "HTTPS://LOCALHOST:{port}/")},
    }[http_mode]  # fmt: skip
    allow = draw(st.sampled_from([None, "*", CORS_ORIGIN, "https://other.example", "null", " * "]))
    credentials = draw(st.sampled_from([None, "true", "TRUE", "false"]))
    preflight_headers = [("Access-Control-Allow-Origin", allow)] if allow else []
    preflight_headers += [("Access-Control-Allow-Credentials", credentials)] if credentials else []
    preflight = Answer(draw(st.sampled_from([200, 204, 404])), tuple(preflight_headers))
    return Site(https, http, preflight)


# -- comparing ------------------------------------------------------------------------------------------


def stackcheck_view(env: Environment, port: int) -> dict[str, Any]:
    """stackcheck's fetch and score of the site on ``port``, in the scanner's output shape."""
    host = f"localhost:{port}"
    with httpx.Client(verify=env.client, timeout=10) as client:
        retrieval = observatory.retrieve(client, f"https://{host}/", f"http://{host}/", host)
    refused = observatory.scanner_refuses(retrieval.page)
    if refused:
        return {"hostname": host, "error": refused}
    score = observatory.scan(retrieval)
    tests = {
        t.test.value: {"result": t.result.value, "scoreModifier": t.modifier, "pass": t.passed} for t in score.tests
    }
    return {"hostname": host, "score": score.score, "grade": score.grade, "tests": tests}


SEEN: Counter[str] = Counter()  # the scanner's result keys over this run, for the coverage line


def disagreements(env: Environment, sites: list[Site]) -> list[str]:
    found = []
    for start in range(0, len(sites), BATCH):
        batch = sites[start : start + BATCH]
        with env.server.serving(batch) as ports:
            scanner = run_scanner(env.scanner, [f"localhost:{p}" for p in ports], env.ca_file)
            ours = [stackcheck_view(env, port) for port in ports]
        for case, theirs, mine in zip(batch, scanner, ours, strict=True):
            SEEN.update(t["result"] for t in theirs.get("tests", {}).values())
            SEEN.update(["scan refused"] if "error" in theirs else [])
            if theirs != mine:
                differing = {
                    k: (theirs.get("tests", {}).get(k), mine.get("tests", {}).get(k))
                    for k in set(theirs.get("tests", {})) | set(mine.get("tests", {}))
                    if theirs.get("tests", {}).get(k) != mine.get("tests", {}).get(k)
                }
                summary = {k: (theirs.get(k), mine.get(k)) for k in ("score", "grade", "error")}
                found.append(
                    f"scanner {SCANNER_VERSION} vs stackcheck: {summary} tests {differing}\n"
                    f"case: {json.dumps(site_to_json(case))}"
                )
    return found


def test_the_fixed_corpus_agrees_with_the_scanner(env: Environment) -> None:
    corpus = [site_from_json(c) for c in json.loads(CORPUS.read_text())]
    assert corpus, f"{CORPUS} holds no case"
    problems = disagreements(env, corpus)
    assert not problems, f"{len(problems)}/{len(corpus)} corpus cases disagree with {SCANNER_VERSION}:\n" + "\n".join(
        problems
    )


def test_generated_sites_agree_with_the_scanner(env: Environment, request: pytest.FixtureRequest) -> None:
    generated: dict[str, Site] = {}

    @settings(
        max_examples=CASES,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(site())
    def collect(case: Site) -> None:
        generated.setdefault(json.dumps(site_to_json(case), sort_keys=True), case)

    chosen_seed = request.config.getoption("hypothesis_seed", default=None)
    (seed(int(chosen_seed))(collect) if chosen_seed is not None else collect)()
    sites = list(generated.values())
    problems = disagreements(env, sites)
    print(f"\n{len(sites)} distinct generated sites, {len(problems)} disagreements with scanner {SCANNER_VERSION}")
    print(f"{len(SEEN)} distinct scanner results seen: {dict(sorted(SEEN.items()))}")
    assert not problems, f"{len(problems)}/{len(sites)} generated sites disagree (add them to {CORPUS.name}):\n" + (
        "\n".join(problems)
    )


def test_the_comparison_catches_a_scorer_that_is_off_by_one_rule(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deliberately broken scorer (a short HSTS max-age costs -5 instead of -10) disagrees."""
    short_hsts = Answer(
        200, (("Content-Type", "application/json"), ("Strict-Transport-Security", "max-age=3600")), "{}"
    )
    site = Site({"/": short_hsts}, {"/": redirect(301, "https://localhost:{port}/")}, Answer(404))
    assert not disagreements(env, [site])
    monkeypatch.setitem(observatory.MODIFIERS, observatory.Expectation.HSTS_LESS_THAN_SIX_MONTHS, -5)
    [problem] = disagreements(env, [site])
    assert "'strict-transport-security': ({'result': 'hsts-implemented-max-age-less-than-six-months', " in problem
    assert "'scoreModifier': -10" in problem
    assert "'scoreModifier': -5" in problem
