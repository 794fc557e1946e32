"""Fuzzed request paths, queries, headers and bodies through the edge never produce a 5xx.

Requests are paced under the api rate limit (so they reach the application instead of being
answered 429 by nginx), bounded in count, and go only to the target's address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackcheck.target import HttpTarget

pytestmark = pytest.mark.compliance
PACE_S = 0.13  # about 7.5 requests per second, under the reference api zone's 10 r/s

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
bodies = st.one_of(json_values.map(json.dumps), st.text(max_size=80), st.just('{"title": "t", "prompt": 1e999}'))


@pytest.fixture(scope="module")
def client(target: HttpTarget) -> Iterator[httpx.Client]:
    with target.http(timeout=10) as c:
        yield c


def _send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
    time.sleep(PACE_S)
    response = client.request(method, path, **kwargs)
    assert response.status_code < 500, f"{method} {path} {kwargs} -> {response.status_code}: {response.text[:300]}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segment=segments,
    query=st.dictionaries(
        st.sampled_from(["page", "page_size", "category", "q", "x"]), st.text(max_size=20), max_size=3
    ),
)
def test_fuzzed_paths_and_queries(client: httpx.Client, segment: str, query: dict[str, str]) -> None:
    _send(client, "GET", f"/api/prompt-cards/{segment}", params=query)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["Accept", "Content-Type", "X-Forwarded-For", "Cookie", "Range", "If-None-Match"]),
    value=header_values,
)
def test_fuzzed_headers(client: httpx.Client, name: str, value: str) -> None:
    _send(client, "GET", "/api/prompt-cards", headers={name: value})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, method=st.sampled_from(["POST", "PUT"]))
def test_fuzzed_bodies(client: httpx.Client, body: str, method: str) -> None:
    path = "/api/prompt-cards" if method == "POST" else "/api/prompt-cards/00000000-0000-0000-0000-000000000000"
    _send(client, method, path, content=body.encode(), headers={"Content-Type": "application/json"})
