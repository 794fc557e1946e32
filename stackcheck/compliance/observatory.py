"""The MDN HTTP Observatory's scoring (algorithm v4), computed on responses stackcheck fetched.

A port of the scanner's analyzer and grader (npm package ``@mdn/mdn-http-observatory``, release
``SCANNER_VERSION``), rule for rule, quirks included, so that a score here is the score the MDN
scanner gives. tests/integration/test_observatory_diff.py runs that release against generated
header sets and requires identical per-test results, score and grade.

What the scanner sees is modelled as node.js and axios present it: repeated headers joined with
", " (first one kept for Content-Type, Location, Server...; Set-Cookie as a list), cookies as
tough-cookie stores them, the body as axios decodes it. Two inputs cannot be known offline and are
taken as the scanner sees them with an empty ``conf/hsts-preload.json``: no host is HSTS-preloaded.
Registrable domains (for Subresource Integrity) are the last two labels of a hostname; the scanner
uses the Public Suffix List, so hosts under multi-label suffixes (``co.uk``) may differ. A
certificate the scanner cannot verify is modelled for HSTS and redirection only (the scanner then
also collects cookies from /robots.txt and sends its preflight elsewhere); tls-certificate judges it.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import html.parser
import ipaddress
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urljoin, urlsplit

import httpx

SCANNER_PACKAGE = "@mdn/mdn-http-observatory"
SCANNER_VERSION = "1.4.8"
ALGORITHM_VERSION = 4

# -- results and their modifiers (grader/charts.js) ------------------------------------------------


class ScanTest(StrEnum):
    """The scanner's tests, in its order."""

    CSP = "content-security-policy"
    COOKIES = "cookies"
    CORS = "cross-origin-resource-sharing"
    REDIRECTION = "redirection"
    REFERRER_POLICY = "referrer-policy"
    HSTS = "strict-transport-security"
    SRI = "subresource-integrity"
    X_CONTENT_TYPE_OPTIONS = "x-content-type-options"
    X_FRAME_OPTIONS = "x-frame-options"
    CORP = "cross-origin-resource-policy"


class Expectation(StrEnum):
    CSP_NO_UNSAFE_DEFAULT_SRC_NONE = "csp-implemented-with-no-unsafe-default-src-none"
    CSP_NO_UNSAFE = "csp-implemented-with-no-unsafe"
    CSP_UNSAFE_INLINE_IN_STYLE_SRC_ONLY = "csp-implemented-with-unsafe-inline-in-style-src-only"
    CSP_INSECURE_SCHEME_IN_PASSIVE_CONTENT_ONLY = "csp-implemented-with-insecure-scheme-in-passive-content-only"
    CSP_UNSAFE_EVAL = "csp-implemented-with-unsafe-eval"
    CSP_UNSAFE_INLINE = "csp-implemented-with-unsafe-inline"
    CSP_INSECURE_SCHEME = "csp-implemented-with-insecure-scheme"
    CSP_HEADER_INVALID = "csp-header-invalid"
    CSP_NOT_IMPLEMENTED = "csp-not-implemented"
    CSP_NOT_IMPLEMENTED_BUT_REPORTING = "csp-not-implemented-but-reporting-enabled"
    CSP_DUPLICATE_DIRECTIVES = "csp-implemented-but-duplicate-directives"
    COOKIES_SECURE_HTTPONLY_SAMESITE = "cookies-secure-with-httponly-sessions-and-samesite"
    COOKIES_SECURE_HTTPONLY = "cookies-secure-with-httponly-sessions"
    COOKIES_NOT_FOUND = "cookies-not-found"
    COOKIES_WITHOUT_SECURE_BUT_HSTS = "cookies-without-secure-flag-but-protected-by-hsts"
    COOKIES_SESSION_WITHOUT_SECURE_BUT_HSTS = "cookies-session-without-secure-flag-but-protected-by-hsts"
    COOKIES_WITHOUT_SECURE = "cookies-without-secure-flag"
    COOKIES_SAMESITE_INVALID = "cookies-samesite-flag-invalid"
    COOKIES_ANTICSRF_WITHOUT_SAMESITE = "cookies-anticsrf-without-samesite-flag"
    COOKIES_SESSION_WITHOUT_HTTPONLY = "cookies-session-without-httponly-flag"
    COOKIES_SESSION_WITHOUT_SECURE = "cookies-session-without-secure-flag"
    CORS_NOT_IMPLEMENTED = "cross-origin-resource-sharing-not-implemented"
    CORS_PUBLIC = "cross-origin-resource-sharing-implemented-with-public-access"
    CORS_RESTRICTED = "cross-origin-resource-sharing-implemented-with-restricted-access"
    CORS_UNIVERSAL = "cross-origin-resource-sharing-implemented-with-universal-access"
    REDIRECTION_ALL_PRELOADED = "redirection-all-redirects-preloaded"
    REDIRECTION_TO_HTTPS = "redirection-to-https"
    REDIRECTION_NOT_NEEDED_NO_HTTP = "redirection-not-needed-no-http"
    REDIRECTION_OFF_HOST_FROM_HTTP = "redirection-off-host-from-http"
    REDIRECTION_NOT_TO_HTTPS_INITIALLY = "redirection-not-to-https-on-initial-redirection"
    REDIRECTION_NOT_TO_HTTPS = "redirection-not-to-https"
    REDIRECTION_MISSING = "redirection-missing"
    REDIRECTION_INVALID_CERT = "redirection-invalid-cert"
    REFERRER_PRIVATE = "referrer-policy-private"
    REFERRER_NOT_IMPLEMENTED = "referrer-policy-not-implemented"
    REFERRER_UNSAFE = "referrer-policy-unsafe"
    REFERRER_INVALID = "referrer-policy-header-invalid"
    HSTS_PRELOADED = "hsts-preloaded"
    HSTS_AT_LEAST_SIX_MONTHS = "hsts-implemented-max-age-at-least-six-months"
    HSTS_LESS_THAN_SIX_MONTHS = "hsts-implemented-max-age-less-than-six-months"
    HSTS_NOT_IMPLEMENTED = "hsts-not-implemented"
    HSTS_INVALID = "hsts-header-invalid"
    HSTS_NO_HTTPS = "hsts-not-implemented-no-https"
    HSTS_INVALID_CERT = "hsts-invalid-cert"
    SRI_ALL_SECURE = "sri-implemented-and-all-scripts-loaded-securely"
    SRI_EXTERNAL_SECURE = "sri-implemented-and-external-scripts-loaded-securely"
    SRI_NOT_HTML = "sri-not-implemented-response-not-html"
    SRI_NO_SCRIPTS = "sri-not-implemented-but-no-scripts-loaded"
    SRI_NOT_IMPLEMENTED_SECURE_ORIGIN = "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"
    SRI_NOT_IMPLEMENTED_EXTERNAL_SECURE = "sri-not-implemented-but-external-scripts-loaded-securely"
    SRI_EXTERNAL_NOT_SECURE = "sri-implemented-but-external-scripts-not-loaded-securely"
    SRI_NOT_IMPLEMENTED_EXTERNAL_NOT_SECURE = "sri-not-implemented-and-external-scripts-not-loaded-securely"
    XCTO_NOSNIFF = "x-content-type-options-nosniff"
    XCTO_NOT_IMPLEMENTED = "x-content-type-options-not-implemented"
    XCTO_INVALID = "x-content-type-options-header-invalid"
    XFO_VIA_CSP = "x-frame-options-implemented-via-csp"
    XFO_SAMEORIGIN_OR_DENY = "x-frame-options-sameorigin-or-deny"
    XFO_ALLOW_FROM = "x-frame-options-allow-from-origin"
    XFO_NOT_IMPLEMENTED = "x-frame-options-not-implemented"
    XFO_INVALID = "x-frame-options-header-invalid"
    CORP_INVALID = "corp-header-invalid"
    CORP_CROSS_ORIGIN = "corp-implemented-with-cross-origin"
    CORP_SAME_ORIGIN = "corp-implemented-with-same-origin"
    CORP_SAME_SITE = "corp-implemented-with-same-site"
    CORP_NOT_IMPLEMENTED = "corp-not-implemented"
    HTML_NOT_PARSEABLE = "html-not-parseable"


E = Expectation
MODIFIERS: dict[Expectation, int] = {
    E.CSP_NO_UNSAFE_DEFAULT_SRC_NONE: 10,
    E.CSP_NO_UNSAFE: 5,
    E.CSP_UNSAFE_INLINE_IN_STYLE_SRC_ONLY: 0,
    E.CSP_INSECURE_SCHEME_IN_PASSIVE_CONTENT_ONLY: -10,
    E.CSP_UNSAFE_EVAL: -10,
    E.CSP_UNSAFE_INLINE: -20,
    E.CSP_INSECURE_SCHEME: -20,
    E.CSP_HEADER_INVALID: -25,
    E.CSP_NOT_IMPLEMENTED: -25,
    E.CSP_NOT_IMPLEMENTED_BUT_REPORTING: -25,
    E.CSP_DUPLICATE_DIRECTIVES: 0,
    E.COOKIES_SECURE_HTTPONLY_SAMESITE: 5,
    E.COOKIES_SECURE_HTTPONLY: 0,
    E.COOKIES_NOT_FOUND: 0,
    E.COOKIES_WITHOUT_SECURE_BUT_HSTS: -5,
    E.COOKIES_SESSION_WITHOUT_SECURE_BUT_HSTS: -10,
    E.COOKIES_WITHOUT_SECURE: -20,
    E.COOKIES_SAMESITE_INVALID: -20,
    E.COOKIES_ANTICSRF_WITHOUT_SAMESITE: -20,
    E.COOKIES_SESSION_WITHOUT_HTTPONLY: -30,
    E.COOKIES_SESSION_WITHOUT_SECURE: -40,
    E.CORS_NOT_IMPLEMENTED: 0,
    E.CORS_PUBLIC: 0,
    E.CORS_RESTRICTED: 0,
    E.CORS_UNIVERSAL: -50,
    E.REDIRECTION_ALL_PRELOADED: 0,
    E.REDIRECTION_TO_HTTPS: 0,
    E.REDIRECTION_NOT_NEEDED_NO_HTTP: 0,
    E.REDIRECTION_OFF_HOST_FROM_HTTP: -5,
    E.REDIRECTION_NOT_TO_HTTPS_INITIALLY: -10,
    E.REDIRECTION_NOT_TO_HTTPS: -20,
    E.REDIRECTION_MISSING: -20,
    E.REDIRECTION_INVALID_CERT: -20,
    E.REFERRER_PRIVATE: 5,
    E.REFERRER_NOT_IMPLEMENTED: 0,
    E.REFERRER_UNSAFE: -5,
    E.REFERRER_INVALID: -5,
    E.HSTS_PRELOADED: 5,
    E.HSTS_AT_LEAST_SIX_MONTHS: 0,
    E.HSTS_LESS_THAN_SIX_MONTHS: -10,
    E.HSTS_NOT_IMPLEMENTED: -20,
    E.HSTS_INVALID: -20,
    E.HSTS_NO_HTTPS: -20,
    E.HSTS_INVALID_CERT: -20,
    E.SRI_ALL_SECURE: 5,
    E.SRI_EXTERNAL_SECURE: 5,
    E.SRI_NOT_HTML: 0,
    E.SRI_NO_SCRIPTS: 0,
    E.SRI_NOT_IMPLEMENTED_SECURE_ORIGIN: 0,
    E.SRI_NOT_IMPLEMENTED_EXTERNAL_SECURE: -5,
    E.SRI_EXTERNAL_NOT_SECURE: -20,
    E.SRI_NOT_IMPLEMENTED_EXTERNAL_NOT_SECURE: -50,
    E.XCTO_NOSNIFF: 0,
    E.XCTO_NOT_IMPLEMENTED: -5,
    E.XCTO_INVALID: -5,
    E.XFO_VIA_CSP: 5,
    E.XFO_SAMEORIGIN_OR_DENY: 0,
    E.XFO_ALLOW_FROM: 0,
    E.XFO_NOT_IMPLEMENTED: -20,
    E.XFO_INVALID: -20,
    E.CORP_INVALID: -5,
    E.CORP_CROSS_ORIGIN: 0,
    E.CORP_SAME_ORIGIN: 10,
    E.CORP_SAME_SITE: 10,
    E.CORP_NOT_IMPLEMENTED: 0,
    E.HTML_NOT_PARSEABLE: -20,
}

# Score floors of each grade; a score above 100 grades as 100.
GRADES: tuple[tuple[int, str], ...] = (
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
    (0, "F"),
)
# Bonuses count only when the score without them already reaches an A.
MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90


def grade_for(score: int) -> str:
    return next(g for floor, g in GRADES if max(score, 0) >= floor)


# -- what the scanner fetches ------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """One HTTP answer: the URL asked for, its status, its header lines in order, its body."""

    url: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str = ""

    def values(self, name: str) -> list[str]:
        """The header as node.js hands it to the scanner: one value per header, joined or not."""
        name = name.lower()
        lines = [v for k, v in self.headers if k.lower() == name]
        if not lines or name == "set-cookie":
            return lines
        return [lines[0] if name in _NODE_FIRST_WINS else ", ".join(lines)]

    def first(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None


# node.js keeps only the first of these when a response repeats them (http.IncomingMessage).
_NODE_FIRST_WINS = frozenset(
    {
        "age",
        "authorization",
        "content-length",
        "content-type",
        "etag",
        "expires",
        "from",
        "host",
        "if-modified-since",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "proxy-authorization",
        "referer",
        "retry-after",
        "server",
        "user-agent",
    }
)
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
CORS_ORIGIN = "https://http-observatory.security.mozilla.org"
# What the scanner sends with its page requests.
REQUEST_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:129.0) Gecko/20100101 Firefox/129.0 "
    "Observatory/129.0",
}


@dataclass(frozen=True)
class Hop:
    url: str
    status: int


@dataclass(frozen=True)
class Retrieval:
    """What the scanner fetches for one host, and judges.

    ``https_chain``: every answer to GET https://HOST/ and its redirects (at most 10 followed), the
    last being the page judged; their Set-Cookie headers fill the cookie jar. ``http_chain``: the
    same for http://HOST/, None when plain HTTP gave no answer. ``preflight``: the 2xx answer to a
    CORS preflight (OPTIONS with Origin CORS_ORIGIN) to the page's URL, None when there was none.
    """

    hostname: str
    https_chain: tuple[Response, ...]
    http_chain: tuple[Hop, ...] | None
    preflight: Response | None
    verified: bool = True  # the certificate chain was valid

    @property
    def page(self) -> Response:
        return self.https_chain[-1]

    def with_page(self, page: Response) -> Retrieval:
        """Another response of the same host judged as the page (its own cookies only)."""
        return Retrieval(self.hostname, (page,), self.http_chain, self.preflight, self.verified)


def scanner_refuses(page: Response) -> str | None:
    """Why the MDN scanner would not grade this page (it accepts 2xx, 3xx, 401 and 403)."""
    if page.status < 200 or (page.status >= 400 and page.status not in (401, 403)):
        return f"Site did respond with an unexpected HTTP status code {page.status}."
    return None


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanTestResult:
    test: ScanTest
    result: Expectation
    passed: bool

    @property
    def modifier(self) -> int:
        return MODIFIERS[self.result]

    def __str__(self) -> str:
        return f"{self.result.value} {self.modifier:+d}"


@dataclass(frozen=True)
class Score:
    score: int
    grade: str
    tests: tuple[ScanTestResult, ...]

    def deductions(self) -> str:
        """The tests that moved the score, as evidence."""
        moved = [str(t) for t in self.tests if t.modifier]
        return ", ".join(moved) or "no test moved the score"


def scan(r: Retrieval) -> Score:
    """The scanner's score for what it fetched (scanner/index.js)."""
    page = _Page.of(r)
    tests = (
        _csp(page).result(),
        _cookies(page),
        _cors(r),
        _redirection(r),
        _referrer(page),
        _hsts(page),
        _sri(page),
        _xcto(page),
        _xfo(page),
        _corp(page),
    )
    with_bonus = 100 + sum(t.modifier for t in tests)
    uncurved = 100 + sum(t.modifier for t in tests if t.modifier < 0)
    score = max(with_bonus if uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT else uncurved, 0)
    return Score(score, grade_for(score), tests)


# -- the page as the tests read it ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Page:
    r: Retrieval
    response: Response
    text: str | None  # the body as axios hands it over (None when empty or parsed to a falsy JSON value)
    equiv_csp: tuple[str, ...]
    equiv_referrer: tuple[str, ...]

    @classmethod
    def of(cls, r: Retrieval) -> _Page:
        response = r.page
        text = _axios_text(response.body)
        csp: list[str] = []
        referrer: list[str] = []
        if (response.first("content-type") or "").split(";")[0] in HTML_TYPES and text:
            for meta in _elements(text, "meta"):
                equiv, content = meta.get("http-equiv"), meta.get("content")
                if equiv is not None and content is not None:
                    if content and equiv.lower().strip() == "content-security-policy":
                        csp.append(content)
                elif (meta.get("name") or "").lower().strip() == "referrer" and meta.get("content"):
                    referrer[:] = [meta["content"] or ""]
        return cls(r, response, text, tuple(csp), tuple(referrer))


def _axios_text(body: str) -> str | None:
    """axios parses any body that is JSON; the scanner then reads the value as text."""
    body = body.removeprefix("\ufeff")
    try:
        value = json.loads(body)
    except ValueError:
        return body or None
    return None if value in (None, False, 0, "") else _js_string(value)


def _js_string(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


class _ElementCollector(html.parser.HTMLParser):
    def __init__(self, tag: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tag = tag
        self.found: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == self.tag:
            element: dict[str, str | None] = {}
            for name, value in attrs:  # HTML keeps the first of repeated attributes
                element.setdefault(name, "" if value is None else value)
            self.found.append(element)

    handle_startendtag = handle_starttag


def _elements(text: str, tag: str) -> list[dict[str, str | None]]:
    parser = _ElementCollector(tag)
    parser.feed(text)
    parser.close()
    return parser.found


# -- Content Security Policy ------------------------------------------------------------------------------

_DANGEROUSLY_BROAD = frozenset({"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"})
_UNSAFE_INLINE = frozenset({"'unsafe-inline'", "data:"})
_BROAD_OR_INLINE = _DANGEROUSLY_BROAD | _UNSAFE_INLINE
_PASSIVE_DIRECTIVES = ("img-src", "media-src")
_NONCES_HASHES = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
_ALLOWED_DUPLICATES = frozenset({"report-uri", "report-to"})
_DISALLOWED_IN_META = ("frame-ancestors", "report-uri", "sandbox")
_DUPLICATES_KEY = "_observatory_duplicate_key_warnings"
# The order of Intl.Collator("en") for the characters of lower-cased ASCII sources.
_COLLATION = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz"
_COLLATION_RANK = {c: i for i, c in enumerate(_COLLATION)}


class _InvalidPolicy(ValueError):
    pass


def _collation_key(source: str) -> tuple[int, ...]:
    return tuple(_COLLATION_RANK.get(c, 1000 + ord(c)) for c in source)


@dataclass
class _Source:
    source: str
    index: int
    keep: bool


def parse_csp(policies: Sequence[str]) -> dict[str, set[str]]:
    """Directive -> sources of one or more policies (cspParser.js): a source counts only if every
    policy allows it; repeated directives make the policy invalid (except report-uri/report-to)."""
    clean = [p.replace("\r", "").replace("\n", "").strip() for p in policies]
    if not clean:
        return {}
    for policy in clean:
        if len(policy) < len("img-src") - 1:
            raise _InvalidPolicy(policy)
    csp: dict[str, list[_Source]] = {}
    duplicates: set[str] = set()
    for index, policy in enumerate(clean):
        seen: set[str] = set()
        for entry in policy.split(";"):
            words = re.split(r"\s+", entry.strip())
            if not words[0]:
                continue
            directive = words[0].lower()
            if directive in seen:
                if directive not in _ALLOWED_DUPLICATES:
                    raise _InvalidPolicy(f"duplicate directive {directive} in policy {index}")
                duplicates.add(directive)
            seen.add(directive)
            keep = index == 0
            values = [_Source(w.strip().lower(), index, keep) for w in words[1:]]
            if not values and directive.endswith("-src"):
                values = [_Source("'none'", index, keep)]  # an empty source list is 'none'
            combined = [*values] if index == 0 else [*csp.get(directive, []), *values]
            combined.sort(key=lambda s: _collation_key(s.source))
            for prev, source in itertools.pairwise(combined):
                # In one policy a source that extends the previous one adds nothing...
                if source.index == prev.index and source.source.startswith(prev.source):
                    source.keep = False
                # ...and across policies a source counts only if both allow it.
                if source.index != prev.index and _path_part_match(prev.source, source.source):
                    source.keep = True
            csp[directive] = [s for s in combined if s.keep]
            if index == 0 and len(policies) > 1:
                for s in csp[directive]:
                    s.keep = False
    final = {d: {s.source for s in sources} if sources else {"'none'"} for d, sources in csp.items()}
    if duplicates:
        final[_DUPLICATES_KEY] = duplicates
    return final


def _path_part_match(a: str, b: str) -> bool:
    if not a or (a == "/" and not b):
        return True
    exact = not a.endswith("/")
    parts_a, parts_b = a.split("/"), b.split("/")
    if len(parts_a) > len(parts_b) or (exact and len(parts_a) != len(parts_b)):
        return False
    if not exact:
        parts_a.pop()
    return all(_decode_uri_component(x) == _decode_uri_component(y) for x, y in zip(parts_a, parts_b, strict=False))


def _decode_uri_component(text: str) -> str:
    """JavaScript's decodeURIComponent: a malformed escape is an error (the policy is then invalid)."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            if not re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
                raise _InvalidPolicy(f"malformed URI sequence in {text!r}")
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InvalidPolicy(f"malformed URI sequence in {text!r}") from exc


def _parse_or_none(policies: Sequence[str], meta: bool = False) -> dict[str, set[str]] | None:
    try:
        csp = parse_csp(policies)
    except _InvalidPolicy:
        return None
    if meta:
        for directive in _DISALLOWED_IN_META:
            csp.pop(directive, None)
    return csp


@dataclass
class _CspVerdict:
    result_key: Expectation
    passed: bool = False
    directives: dict[str, set[str]] = field(default_factory=dict)

    def result(self) -> ScanTestResult:
        return ScanTestResult(ScanTest.CSP, self.result_key, self.passed)


def _csp(page: _Page) -> _CspVerdict:
    header = page.response.values("content-security-policy")
    csp = _parse_or_none([*header, *page.equiv_csp])
    if csp is None:
        return _CspVerdict(E.CSP_HEADER_INVALID)
    header_only = _parse_or_none(header) or {}
    meta_only = _parse_or_none(page.equiv_csp, meta=True) or {}
    if not header_only and not meta_only:
        reporting = page.response.first("content-security-policy-report-only")
        return _CspVerdict(E.CSP_NOT_IMPLEMENTED_BUT_REPORTING if reporting else E.CSP_NOT_IMPLEMENTED)

    any_source = {"*"}
    default = csp.get("default-src")
    # These may be the very same set as default-src: what is removed below is removed from both.
    script_src = csp.get("script-src") or default or set(any_source)
    style_src = csp.get("style-src") or default or set(any_source)
    object_src = csp.get("object-src") or default or set(any_source)

    for sources in (script_src, style_src):
        if _nonce_or_hash(sources):
            sources.discard("'unsafe-inline'")
    result: Expectation | None = None
    if _nonce_or_hash(script_src) and "'strict-dynamic'" in script_src:
        for source in list(script_src):
            if any(source.startswith(s) for s in _DANGEROUSLY_BROAD) or source in ("'self'", "'unsafe-inline'"):
                script_src.discard(source)
    elif "'strict-dynamic'" in script_src:
        result = E.CSP_HEADER_INVALID

    active = [s for d, sources in csp.items() if d not in _PASSIVE_DIRECTIVES and d != "script-src" for s in sources]
    active += list(script_src)
    passive = [s for d in _PASSIVE_DIRECTIVES for s in (csp.get(d) or default or set())]

    def first(candidate: Expectation, condition: bool) -> None:
        nonlocal result
        if condition and result is None:
            result = candidate

    insecure = ("http:", "ftp:")  # the page is always fetched over https
    first(
        E.CSP_UNSAFE_INLINE,
        bool(script_src & _BROAD_OR_INLINE) or bool(object_src & _DANGEROUSLY_BROAD),
    )
    first(E.CSP_INSECURE_SCHEME, any(s.startswith(insecure) for s in active))
    first(E.CSP_UNSAFE_EVAL, "'unsafe-eval'" in script_src | style_src)
    first(E.CSP_INSECURE_SCHEME_IN_PASSIVE_CONTENT_ONLY, any(s.startswith(insecure) for s in passive))
    first(E.CSP_UNSAFE_INLINE_IN_STYLE_SRC_ONLY, bool(style_src & _BROAD_OR_INLINE))
    default_none = default is not None and default == {"'none'"}
    first(E.CSP_NO_UNSAFE_DEFAULT_SRC_NONE, default_none)
    first(E.CSP_NO_UNSAFE, True)
    assert result is not None

    passed = result in (
        E.CSP_NO_UNSAFE,
        E.CSP_NO_UNSAFE_DEFAULT_SRC_NONE,
        E.CSP_UNSAFE_INLINE_IN_STYLE_SRC_ONLY,
        E.CSP_INSECURE_SCHEME_IN_PASSIVE_CONTENT_ONLY,
    )
    if passed and _DUPLICATES_KEY in csp:
        result = E.CSP_DUPLICATE_DIRECTIVES
    directives = {d: s for d, s in csp.items() if d != _DUPLICATES_KEY}
    return _CspVerdict(result, passed, directives)


def _nonce_or_hash(sources: Iterable[str]) -> bool:
    return any(s.startswith(_NONCES_HASHES) for s in sources)


# -- cookies ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cookie:
    """A cookie as tough-cookie stores it."""

    key: str
    domain: str
    path: str
    secure: bool
    http_only: bool
    same_site: str | None  # "strict", "lax", "none" or None
    host_only: bool = True
    expired: bool = False  # Max-Age <= 0 or an Expires in the past

    def matches(self, url: str) -> bool:
        """Whether the jar would send this cookie with a request to ``url`` (and so drop it if expired)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if (self.host_only and host != self.domain) or not _domain_match(host, self.domain):
            return False
        path = parts.path or "/"
        prefix = path.startswith(self.path) and (
            self.path.endswith("/") or path[len(self.path) : len(self.path) + 1] in ("", "/")
        )
        return prefix and (parts.scheme == "https" or not self.secure)


def parse_cookie(set_cookie: str, url: str) -> Cookie | None:
    """tough-cookie's Cookie.parse and the checks of CookieJar.setCookie; None: not stored."""
    text = set_cookie.strip()
    pair, _, attributes = text.partition(";")
    for terminator in "\n\r\0":
        pair = pair.split(terminator)[0]
    name, eq, value = pair.partition("=")
    if not eq or not name:
        return None  # no "=" or an empty name
    name, value = name.strip(), value.strip()
    if re.search(r"[\x00-\x1f]", name + value):
        return None
    domain: str | None = None
    path: str | None = None
    secure = http_only = False
    same_site: str | None = None
    max_age: int | None = None
    expires: datetime.datetime | None = None
    for av in attributes.split(";"):
        av = av.strip()
        if not av:
            continue
        key, has_value, av_value = av.partition("=")
        key = key.strip().lower()
        av_value = av_value.strip() if has_value else ""
        if key == "expires" and av_value:
            expires = _cookie_date(av_value) or expires
        elif key == "max-age" and re.fullmatch(r"-?[0-9]+", av_value):
            max_age = int(av_value)
        elif key == "domain" and av_value:
            domain = av_value.strip().removeprefix(".").lower() or domain
        elif key == "path":
            path = av_value if av_value.startswith("/") else None
        elif key == "secure":
            secure = True
        elif key == "httponly":
            http_only = True
        elif key == "samesite":
            same_site = av_value.lower() if av_value.lower() in ("strict", "lax", "none") else None
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if domain is not None:
        if _is_public_suffix(domain) or not _domain_match(host, domain):
            return None
        host_only = False
    else:
        domain, host_only = host, True
    if path is None:
        directory = parts.path or "/"
        path = directory[: directory.rindex("/")] or "/" if directory.startswith("/") else "/"
    if name.startswith("__Secure-") and not secure:
        return None
    if name.startswith("__Host-") and not (secure and host_only and path == "/"):
        return None
    if max_age is not None:  # Max-Age wins over Expires
        expired = max_age <= 0
    else:
        expired = expires is not None and expires <= datetime.datetime.now(datetime.UTC)
    return Cookie(name, domain, path, secure, http_only, same_site, host_only, expired)


def _cookie_date(text: str) -> datetime.datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


_SPECIAL_USE_DOMAINS = frozenset({"local", "example", "invalid", "localhost", "test"})


def _is_public_suffix(domain: str) -> bool:
    """A Domain attribute naming a bare TLD (e.g. "com") is refused; special-use names are allowed."""
    if _is_ip(domain):
        return ":" not in domain  # an IPv4 address has no public suffix; tough-cookie lets IPv6 through
    return "." not in domain and domain not in _SPECIAL_USE_DOMAINS


def _domain_match(host: str, domain: str) -> bool:
    return host == domain or (host.endswith("." + domain) and not _is_ip(host))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _jar(r: Retrieval) -> list[Cookie]:
    """The cookie jar after the page's requests: a cookie replaces one of the same name, domain, path."""
    jar: dict[tuple[str, str, str], Cookie] = {}
    for response in r.https_chain:
        # Asking for the cookies of a request drops the expired ones it matches.
        jar = {k: c for k, c in jar.items() if not (c.expired and c.matches(response.url))}
        for line in response.values("set-cookie"):
            cookie = parse_cookie(line, response.url)
            if cookie is not None:
                jar[(cookie.domain, cookie.path, cookie.key)] = cookie
    return [c for c in jar.values() if c.key != "heroku-session-affinity"]


def _raw_samesite_invalid(set_cookie: str) -> bool:
    for part in set_cookie.strip().split(";"):
        key, *rest = part.strip().split("=")
        if key.strip().lower() == "samesite":
            value = rest[0] if rest else ""
            if not value or value.strip().lower() not in ("lax", "strict", "none"):
                return True
    return False


_COOKIE_BADNESS = (
    E.COOKIES_WITHOUT_SECURE_BUT_HSTS,
    E.COOKIES_WITHOUT_SECURE,
    E.COOKIES_SESSION_WITHOUT_SECURE_BUT_HSTS,
    E.COOKIES_SAMESITE_INVALID,
    E.COOKIES_ANTICSRF_WITHOUT_SAMESITE,
    E.COOKIES_SESSION_WITHOUT_HTTPONLY,
    E.COOKIES_SESSION_WITHOUT_SECURE,
)


def _worse(new: Expectation, old: Expectation | None, order: Sequence[Expectation]) -> Expectation:
    """The later in ``order`` (worse); a result not in ``order`` counts as better than all."""
    if old is None:
        return new
    rank = {e: i for i, e in enumerate(order)}
    return new if rank.get(new, -1) > rank.get(old, -1) else old


def _cookies(page: _Page) -> ScanTestResult:
    hsts = _hsts(page).passed
    result: Expectation | None = None
    if any(_raw_samesite_invalid(c) for c in page.response.values("set-cookie")):
        result = E.COOKIES_SAMESITE_INVALID
    cookies = _jar(page.r)
    if not cookies:
        result = E.COOKIES_NOT_FOUND
    else:
        missing_samesite = False
        for cookie in cookies:
            session = "login" in cookie.key.lower() or "sess" in cookie.key.lower()
            anticsrf = "csrf" in cookie.key.lower()
            found: list[Expectation] = []
            if not cookie.secure and cookie.same_site == "none":
                found.append(E.COOKIES_SAMESITE_INVALID)
            if not cookie.secure:
                found.append(E.COOKIES_WITHOUT_SECURE_BUT_HSTS if hsts else E.COOKIES_WITHOUT_SECURE)
            if anticsrf and not cookie.same_site:
                found.append(E.COOKIES_ANTICSRF_WITHOUT_SAMESITE)
            if session and not cookie.secure:
                found.append(E.COOKIES_SESSION_WITHOUT_SECURE_BUT_HSTS if hsts else E.COOKIES_SESSION_WITHOUT_SECURE)
            if session and not cookie.http_only:
                found.append(E.COOKIES_SESSION_WITHOUT_HTTPONLY)
            for expectation in found:
                result = _worse(expectation, result, _COOKIE_BADNESS)
            missing_samesite = missing_samesite or not cookie.same_site
        if result is None:
            result = E.COOKIES_SECURE_HTTPONLY if missing_samesite else E.COOKIES_SECURE_HTTPONLY_SAMESITE
    passed = result in (E.COOKIES_NOT_FOUND, E.COOKIES_SECURE_HTTPONLY_SAMESITE, E.COOKIES_SECURE_HTTPONLY)
    return ScanTestResult(ScanTest.COOKIES, result, passed)


# -- CORS, redirection, referrer ---------------------------------------------------------------------------


def _cors(r: Retrieval) -> ScanTestResult:
    allow = r.preflight.first("access-control-allow-origin") if r.preflight else None
    if not allow:
        result = E.CORS_NOT_IMPLEMENTED
    elif allow[:256].strip().lower() == "*":
        result = E.CORS_PUBLIC
    else:
        # The scanner would call an allowed origin equal to its own Origin, with credentials,
        # universal access, but it reads that Origin from axios' request object, which has no
        # headers: this release reports every other allowed origin as restricted.
        result = E.CORS_RESTRICTED
    return ScanTestResult(ScanTest.CORS, result, True)


def _redirection(r: Retrieval) -> ScanTestResult:
    route = r.http_chain
    if route is None:
        result = E.REDIRECTION_NOT_NEEDED_NO_HTTP
    elif not r.verified:
        result = E.REDIRECTION_INVALID_CERT
    elif len(route) == 1:
        result = E.REDIRECTION_MISSING
    elif urlsplit(route[-1].url).scheme != "https":
        result = E.REDIRECTION_NOT_TO_HTTPS
    elif urlsplit(route[1].url).scheme == "http":
        result = E.REDIRECTION_NOT_TO_HTTPS_INITIALLY
    elif urlsplit(route[0].url).hostname != urlsplit(route[1].url).hostname:
        result = E.REDIRECTION_OFF_HOST_FROM_HTTP
    else:
        result = E.REDIRECTION_TO_HTTPS
    passed = result in (E.REDIRECTION_NOT_NEEDED_NO_HTTP, E.REDIRECTION_ALL_PRELOADED, E.REDIRECTION_TO_HTTPS)
    return ScanTestResult(ScanTest.REDIRECTION, result, passed)


_REFERRER_PRIVATE = ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")
_REFERRER_UNSAFE = ("origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade")


def _referrer(page: _Page) -> ScanTestResult:
    values = [*page.response.values("referrer-policy"), *page.equiv_referrer]
    if not values:
        return ScanTestResult(ScanTest.REFERRER_POLICY, E.REFERRER_NOT_IMPLEMENTED, True)
    # The last policy the browser knows counts (a meta tag comes after the header).
    known = [v.lower().strip() for v in ", ".join(values).split(",")]
    known = [v for v in known if v in _REFERRER_PRIVATE + _REFERRER_UNSAFE]
    policy = known[-1] if known else ""
    if policy in _REFERRER_PRIVATE:
        result = E.REFERRER_PRIVATE
    elif policy in _REFERRER_UNSAFE:
        result = E.REFERRER_UNSAFE
    else:
        result = E.REFERRER_INVALID
    return ScanTestResult(ScanTest.REFERRER_POLICY, result, result is E.REFERRER_PRIVATE)


# -- HSTS, SRI, X-Content-Type-Options, X-Frame-Options, CORP ------------------------------------------

SIX_MONTHS = 15552000  # the scanner's "six months" (a little under 15768000)


def _js_parse_int(text: str) -> int | None:
    """JavaScript's parseInt(text, 10); None for NaN."""
    match = re.match(r"[\s\ufeff]*([+-]?\d+)", text)
    return int(match.group(1)) if match else None


def _hsts(page: _Page) -> ScanTestResult:
    if not page.r.verified:
        return ScanTestResult(ScanTest.HSTS, E.HSTS_INVALID_CERT, False)
    header = page.response.first("strict-transport-security")
    result = E.HSTS_NOT_IMPLEMENTED
    if header is not None:
        data = header[:1024]
        result = E.HSTS_INVALID
        if "," not in data:  # set more than once
            max_age: int | None = None
            has_max_age = False
            for parameter in (p.strip().lower() for p in data.split(";")):
                if parameter.startswith("max-age="):
                    has_max_age = True
                    max_age = _js_parse_int(parameter[8:128])
            if has_max_age:
                # parseInt's NaN compares false with everything: not shorter than six months.
                short = max_age is not None and max_age < SIX_MONTHS
                result = E.HSTS_LESS_THAN_SIX_MONTHS if short else E.HSTS_AT_LEAST_SIX_MONTHS
    return ScanTestResult(ScanTest.HSTS, result, result in (E.HSTS_AT_LEAST_SIX_MONTHS, E.HSTS_PRELOADED))


_SRI_BADNESS = (
    E.SRI_ALL_SECURE,
    E.SRI_EXTERNAL_SECURE,
    E.SRI_EXTERNAL_NOT_SECURE,
    E.SRI_NOT_IMPLEMENTED_EXTERNAL_SECURE,
    E.SRI_NOT_IMPLEMENTED_EXTERNAL_NOT_SECURE,
    E.SRI_NOT_HTML,
)


def registrable_domain(host: str) -> str | None:
    """The site of a hostname (None for IP addresses and single labels); see the module note."""
    host = host.lower().rstrip(".")
    labels = host.split(".")
    if _is_ip(host) or len(labels) < 2 or not all(labels):
        return None
    return ".".join(labels[-2:])


def _script_src(value: str) -> str:
    """script.src in a document at about:blank: absolute http(s) URLs serialized, the rest as written."""
    value = value.strip(" \t\n\r\f\x00")
    match = re.match(r"(?i)(https?):[/\\]*", value)
    if not match:
        return value
    scheme = match.group(1).lower()
    parts = urlsplit(f"{scheme}://{value[match.end() :]}")
    host = (parts.hostname or "").lower()
    port = "" if parts.port in (None, {"http": 80, "https": 443}[scheme]) else f":{parts.port}"
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{scheme}://{host}{port}{parts.path or '/'}{query}{fragment}"


def _sri(page: _Page) -> ScanTestResult:
    result: Expectation | None = None
    if (page.response.first("content-type") or "").split(";")[0] not in HTML_TYPES:
        result = E.SRI_NOT_HTML
    else:
        scripts = _elements(page.text or "", "script")
        foreign = False
        site = registrable_domain(urlsplit(f"//{page.r.hostname}").hostname or "")
        for script in scripts:
            src = _script_src(script.get("src") or "")
            if not src:
                continue
            integrity = bool(script.get("integrity"))
            relative_protocol = re.match(r"//[^/]", src) is not None
            full_url = re.match(r"https?://", src) is not None
            relative_origin = not relative_protocol and not full_url
            same_site = relative_protocol or relative_origin
            if full_url:
                same_site = registrable_domain(urlsplit(src).hostname or "") == site
            secure_origin = relative_origin or (same_site and not relative_protocol)
            foreign = foreign or not secure_origin
            secure_scheme = src.startswith("https:") or relative_origin  # the page is https
            if not secure_origin:
                if integrity and not secure_scheme:
                    result = _worse(E.SRI_EXTERNAL_NOT_SECURE, result, _SRI_BADNESS)
                elif not integrity and secure_scheme:
                    result = _worse(E.SRI_NOT_IMPLEMENTED_EXTERNAL_SECURE, result, _SRI_BADNESS)
                elif not integrity:
                    result = _worse(E.SRI_NOT_IMPLEMENTED_EXTERNAL_NOT_SECURE, result, _SRI_BADNESS)
            elif integrity and secure_scheme and result is None:
                result = E.SRI_ALL_SECURE  # the bonus even for SRI on the same origin
        if not scripts:
            result = E.SRI_NO_SCRIPTS
        elif result is None:
            result = E.SRI_EXTERNAL_SECURE if foreign else E.SRI_NOT_IMPLEMENTED_SECURE_ORIGIN
    passed = result in (
        E.SRI_ALL_SECURE,
        E.SRI_EXTERNAL_SECURE,
        E.SRI_NOT_HTML,
        E.SRI_NOT_IMPLEMENTED_SECURE_ORIGIN,
        E.SRI_NO_SCRIPTS,
    )
    return ScanTestResult(ScanTest.SRI, result, passed)


def _xcto(page: _Page) -> ScanTestResult:
    header = page.response.first("x-content-type-options")
    if not header:
        result = E.XCTO_NOT_IMPLEMENTED
    else:
        result = E.XCTO_NOSNIFF if header[:256].strip().lower() == "nosniff" else E.XCTO_INVALID
    return ScanTestResult(ScanTest.X_CONTENT_TYPE_OPTIONS, result, result is E.XCTO_NOSNIFF)


def _xfo(page: _Page) -> ScanTestResult:
    header = page.response.first("x-frame-options")
    if not header:
        result = E.XFO_NOT_IMPLEMENTED
    else:
        xfo = header[:1024].strip().lower()
        if xfo in ("deny", "sameorigin"):
            result = E.XFO_SAMEORIGIN_OR_DENY
        elif xfo.startswith("allow-from"):
            result = E.XFO_ALLOW_FROM
        else:
            result = E.XFO_INVALID
    # frame-ancestors anywhere in the policy (meta tags included) replaces the header.
    if "frame-ancestors" in _csp(page).directives:
        result = E.XFO_VIA_CSP
    passed = result in (E.XFO_ALLOW_FROM, E.XFO_SAMEORIGIN_OR_DENY, E.XFO_VIA_CSP)
    return ScanTestResult(ScanTest.X_FRAME_OPTIONS, result, passed)


def _corp(page: _Page) -> ScanTestResult:
    header = page.response.first("cross-origin-resource-policy")
    result = E.CORP_NOT_IMPLEMENTED
    if header and header[:256].strip():
        value = header[:256].strip().lower()
        result = {
            "same-site": E.CORP_SAME_SITE,
            "same-origin": E.CORP_SAME_ORIGIN,
            "cross-origin": E.CORP_CROSS_ORIGIN,
        }.get(value, E.CORP_INVALID)
    return ScanTestResult(ScanTest.CORP, result, result is not E.CORP_INVALID)


# -- fetching what the scanner fetches -----------------------------------------------------------------


def follow(get: Callable[[str], Response], url: str) -> tuple[Response, ...]:
    """GET ``url`` and its redirects as the scanner does (at most 10 followed)."""
    chain = [get(url)]
    while chain[-1].status in REDIRECT_STATUSES and len(chain) <= MAX_REDIRECTS:
        location = chain[-1].first("location")
        # A redirect without Location goes to the relative URL "undefined", as in the scanner.
        chain.append(get(urljoin(chain[-1].url, "undefined" if location is None else location)))
    return tuple(chain)


def retrieve(
    client: httpx.Client,
    https_url: str,
    http_url: str | None,
    hostname: str,
    origins: Mapping[str, str] | None = None,
) -> Retrieval:
    """Fetch what the scanner fetches for ``hostname`` with ``client`` (no redirects followed by
    it): the HTTPS page chain, the plain-HTTP chain and the CORS preflight. ``origins`` maps an
    origin the scanner would use (e.g. https://localhost) to where it is served here
    (https://localhost:32771); requests to it carry the original Host."""
    try:
        return _retrieve(client, https_url, http_url, hostname, origins or {})
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" not in str(exc):
            raise
        # The scanner retries without verification and marks the certificate invalid.
        with httpx.Client(verify=False, timeout=client.timeout) as unverified:
            retrieval = _retrieve(unverified, https_url, http_url, hostname, origins or {})
        return dataclasses.replace(retrieval, verified=False)


def _retrieve(
    client: httpx.Client, https_url: str, http_url: str | None, hostname: str, origins: Mapping[str, str]
) -> Retrieval:
    https_chain = follow(_getter(client, origins, "GET"), https_url)
    http_chain: tuple[Hop, ...] | None = None
    if http_url is not None:
        try:
            http_chain = tuple(Hop(r.url, r.status) for r in follow(_getter(client, origins, "GET"), http_url))
        except httpx.HTTPError:
            http_chain = None  # no answer somewhere along the chain: the scanner sees no HTTP
    preflight: Response | None = None
    try:
        options = _getter(client, origins, "OPTIONS", {"Access-Control-Request-Method": "GET", "Origin": CORS_ORIGIN})
        answer = follow(options, https_chain[-1].url)[-1]
        preflight = answer if 200 <= answer.status < 300 else None
    except httpx.HTTPError:
        preflight = None  # axios rejects what it cannot fetch or a non-2xx answer: no preflight
    return Retrieval(hostname, https_chain, http_chain, preflight)


def _getter(
    client: httpx.Client, origins: Mapping[str, str], method: str, extra: Mapping[str, str] | None = None
) -> Callable[[str], Response]:
    def get(url: str) -> Response:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        headers = {**REQUEST_HEADERS, **(extra or {})}
        served = origins.get(origin.lower())
        if served:
            headers["Host"] = parts.netloc
        answer = client.request(method, served + url[len(origin) :] if served else url, headers=headers)
        return Response(
            url, answer.status_code, tuple(answer.headers.multi_items()), answer.content.decode("utf-8", "replace")
        )

    return get
