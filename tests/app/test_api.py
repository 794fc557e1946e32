"""HTTP behaviour through FastAPI's TestClient with every dependency down (DB on a closed port,
no Redis, no LLM): errors must be clean JSON, and nothing may answer 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from promptcard_api.config import Settings
from promptcard_api.main import create_app

CARD = "2b1f6f4e-8d36-4c3c-9d62-3f1b7b1a0c11"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:pw@127.0.0.1:1/app",  # nothing listens on port 1
            "DB_POOL_TIMEOUT_S": "0.2",
            "HEALTH_CHECK_TIMEOUT_S": "0.5",
        }
    )
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c


def test_liveness(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_comprehensive_unhealthy_without_database(client: TestClient) -> None:
    r = client.get("/api/health/comprehensive")
    assert r.status_code == 503
    body = r.json()
    checks = {c["name"]: c for c in body["checks"]}
    assert body["status"] == "unhealthy"
    assert checks["database"]["status"] == "unhealthy"
    assert checks["llm"] == {
        "name": "llm",
        "status": "degraded",
        "response_time_ms": 0.0,
        "details": "no LLM configured",
    }
    assert "pw" not in r.text


def test_database_down_is_503(client: TestClient) -> None:
    for method, path, body in [
        ("GET", "/api/prompt-cards", None),
        ("GET", f"/api/prompt-cards/{CARD}", None),
        ("POST", "/api/prompt-cards", {"title": "t", "prompt": "p"}),
        ("PUT", f"/api/prompt-cards/{CARD}", {"title": "t"}),
        ("DELETE", f"/api/prompt-cards/{CARD}", None),
        ("GET", f"/api/prompt-cards/{CARD}/test-cases", None),
        ("POST", f"/api/prompt-cards/{CARD}/test-cases", {"name": "n", "input": {}}),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 503, (method, path, r.text)
        assert r.json()["error"] == "database_unavailable"
        assert r.headers["retry-after"] == "1"


def test_execute_without_llm(client: TestClient) -> None:
    r = client.post(f"/api/prompt-cards/{CARD}/execute", json={"input": "x"})
    assert r.status_code == 503
    assert r.json() == {"error": "llm_unavailable", "detail": "no LLM configured (set LLM_URL)"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "t"},
        {"prompt": "p"},
        {"title": "", "prompt": "p"},
        {"title": "x" * 256, "prompt": "p"},
        {"title": "t", "prompt": "p", "category": "c" * 101},
        {"title": "t", "prompt": "p", "tags": "notalist"},
        {"title": "t", "prompt": "p", "metadata": [1]},
        {"title": "t\u0000", "prompt": "p"},
        {"title": "t", "prompt": "p", "is_public": "maybe"},
        [],
        "string",
        42,
        None,
    ],
)
def test_create_validation(client: TestClient, body: Any) -> None:
    r = client.post("/api/prompt-cards", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert isinstance(r.json()["detail"], list)
    assert r.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "ctype"),
    [
        (b"{bad", "application/json"),
        (b'{"title": "t", "prompt": "p", "metadata": {"x": NaN}}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[" * 5000, "application/json"),
        (b'{"title":"\\ud800","prompt":"p"}', "application/json"),
        (b"title=t&prompt=p", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
        (b"hello", "text/plain"),
    ],
)
def test_malformed_bodies(client: TestClient, raw: bytes, ctype: str) -> None:
    r = client.post("/api/prompt-cards", content=raw, headers={"content-type": ctype})
    assert r.status_code in (400, 422), r.text
    assert "error" in r.json()
    assert "Traceback" not in r.text


def test_put_null_for_required_field(client: TestClient) -> None:
    r = client.put(f"/api/prompt-cards/{CARD}", json={"title": None})
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


def test_test_case_validation(client: TestClient) -> None:
    assert client.post(f"/api/prompt-cards/{CARD}/test-cases", json={"name": "n"}).status_code == 422
    assert client.post(f"/api/prompt-cards/{CARD}/test-cases", json={"name": "n", "input": "str"}).status_code == 422


@pytest.mark.parametrize(
    "path",
    ["/api/prompt-cards/abc", "/api/prompt-cards/1", "/api/prompt-cards/abc/test-cases", "/api/prompt-cards/%00"],
)
def test_invalid_uuid(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (404, 422)
    assert "error" in r.json()


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=x",
        "page_size=0",
        "page_size=101",
        "page=99999999999999999999999",
        "q=%00",
        "category=" + "c" * 101,
    ],
)
def test_bad_query(client: TestClient, query: str) -> None:
    r = client.get(f"/api/prompt-cards?{query}")
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    r = client.patch("/api/prompt-cards")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


def test_body_too_large(client: TestClient) -> None:
    r = client.post("/api/prompt-cards", content=b"x" * (1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


def test_no_version_disclosure(client: TestClient) -> None:
    r = client.get("/api/health")
    assert "server" not in r.headers
    assert client.get("/docs").status_code == 404


def test_metrics_use_route_templates(client: TestClient) -> None:
    client.get(f"/api/prompt-cards/{CARD}")
    client.get("/random/path/123")
    text = client.get("/metrics").text
    assert 'route="/api/prompt-cards/{card_id}"' in text
    assert CARD not in text
    assert "/random/path" not in text
    assert 'route="<unmatched>"' in text
    assert "http_request_duration_seconds_bucket" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
card_like = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        for k in ("title", "prompt", "description", "category", "tags", "metadata", "is_public", "id", "version")
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(card_like, json_values), path_id=st.text(max_size=40), raw=st.binary(max_size=64))
def test_fuzz_never_500(client: TestClient, body: Any, path_id: str, raw: bytes) -> None:
    for r in (
        client.post("/api/prompt-cards", json=body),
        client.put(f"/api/prompt-cards/{CARD}", json=body),
        client.post(f"/api/prompt-cards/{CARD}/test-cases", json=body),
        client.post(f"/api/prompt-cards/{CARD}/execute", json=body),
        client.post("/api/prompt-cards", content=raw, headers={"content-type": "application/json"}),
        client.get("/api/prompt-cards", params={"q": path_id, "page": path_id}),
        client.get("/api/prompt-cards/" + path_id.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")),
    ):
        assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text)
        json.loads(r.text)  # always JSON
