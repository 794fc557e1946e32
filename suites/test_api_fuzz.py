"""Fuzzed request paths, queries, headers and bodies through the edge never produce a 5xx.

What is fuzzed is the stack's own API as its stack file declares it: the paths of its load mix's
requests (or, without a mix, the policy's ``[http] routes``) and the JSON bodies of its writes.
Requests are paced under a usual API rate limit (so they reach the application instead of being
answered 429 by the edge), bounded in count, and go only to the target's address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stackcheck.fixtures.compliance import policy
from stackcheck.fixtures.stack import stack_file

from stackcheck import stackfile
from stackcheck.target import HttpTarget

pytestmark = [
    pytest.mark.compliance,
    pytest.mark.exclusive("paced just under the API limit: no other traffic on its key"),
]
PACE_S = 0.13  # about 7.5 requests per second, under the 10 r/s of a usual API limit zone

segments = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40).map(
    lambda s: quote(s, safe="")
)
# Printable ASCII without surrounding blanks: what an HTTP client may legally send at all.
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).filter(
    lambda v: v == v.strip()
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(json_values.map(json.dumps), st.text(max_size=80), st.just('{"title": "t", "n": 1e999}'))


@dataclass(frozen=True)
class Surface:
    """What the stack file says its API is: paths to fuzz under, and the JSON writes it takes."""

    paths: tuple[str, ...]
    writes: tuple[tuple[str, str], ...]  # (method, path)


def _concrete(path: str) -> str:
    """A mix path without its query and templated parts: /api/cards/${pick.cards}?x=1 -> /api/cards."""
    path = path.split("?", 1)[0]
    return path.split("${", 1)[0].rstrip("/") or "/"


@pytest.fixture(scope="module")
def surface(request: pytest.FixtureRequest) -> Surface:
    given = request.config.getoption("--stack") or not request.config.getoption("--target")
    mix = stackfile.load(stack_file(request.config)).load_mix if given else None
    requests = mix.requests if mix is not None else ()
    paths = {_concrete(r.http.path) for r in requests} or set(policy(request.config).http.routes)
    writes = {(r.http.method, _concrete(r.http.path)) for r in requests if r.http.json is not None}
    return Surface(tuple(sorted(paths)), tuple(sorted(writes)))


@pytest.fixture(scope="module")
def client(target: HttpTarget) -> Iterator[httpx.Client]:
    with target.http(timeout=10) as c:
        yield c


_last_send = [0.0]  # monotonic time of the last request sent


def _send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
    # Sends start at least PACE_S apart (the same bound on the rate as a sleep before each), but
    # the time a request took counts towards the next one's wait instead of adding to it.
    time.sleep(max(0.0, _last_send[0] + PACE_S - time.monotonic()))
    _last_send[0] = time.monotonic()
    response = client.request(method, path, **kwargs)
    assert response.status_code < 500, f"{method} {path} {kwargs} -> {response.status_code}: {response.text[:300]}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    segment=segments,
    query=st.dictionaries(st.sampled_from(["page", "page_size", "q", "id", "x"]), st.text(max_size=20), max_size=3),
)
def test_fuzzed_paths_and_queries(
    client: httpx.Client, surface: Surface, data: st.DataObject, segment: str, query: dict[str, str]
) -> None:
    base = data.draw(st.sampled_from(surface.paths)).rstrip("/")
    _send(client, "GET", f"{base}/{segment}", params=query)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["Accept", "Content-Type", "X-Forwarded-For", "Cookie", "Range", "If-None-Match"]),
    value=header_values,
)
def test_fuzzed_headers(client: httpx.Client, surface: Surface, name: str, value: str) -> None:
    _send(client, "GET", surface.paths[0], headers={name: value})


@pytest.fixture
def writes(surface: Surface) -> tuple[tuple[str, str], ...]:
    if not surface.writes:
        pytest.skip("not applicable: the stack file's [load] mix declares no request with a json body to fuzz")
    return surface.writes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), body=bodies)
def test_fuzzed_bodies(
    client: httpx.Client, writes: tuple[tuple[str, str], ...], data: st.DataObject, body: str
) -> None:
    method, path = data.draw(st.sampled_from(writes))
    _send(client, method, path, content=body.encode(), headers={"Content-Type": "application/json"})
