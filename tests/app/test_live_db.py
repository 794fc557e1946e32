"""Against a real PostgreSQL (+ optional Redis): set PROMPTCARD_TEST_DATABASE_URL (and
PROMPTCARD_TEST_REDIS_URL) to throwaway instances, e.g. stackcheck/postgres and stackcheck/redis
containers published on 127.0.0.1 (scripts/test starts both). Skipped otherwise, except with
STACKCHECK_REQUIRE_LIVE_DB=1 (scripts/test, CI): then a missing database fails the tests, so
they can never silently not run. Tests create their own rows only."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from promptcard_api.config import Settings
from promptcard_api.main import create_app

DB = os.environ.get("PROMPTCARD_TEST_DATABASE_URL")
REDIS = os.environ.get("PROMPTCARD_TEST_REDIS_URL")
REQUIRED = os.environ.get("STACKCHECK_REQUIRE_LIVE_DB", "") == "1"


def require(variable: str, value: str | None) -> None:
    if value:
        return
    if REQUIRED:
        pytest.fail(f"{variable} is not set, and STACKCHECK_REQUIRE_LIVE_DB=1 says these tests must run", pytrace=False)
    pytest.skip(f"{variable} not set")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    require("PROMPTCARD_TEST_DATABASE_URL", DB)
    env = {"DATABASE_URL": DB or "", "CACHE_TTL_S": "30"}
    if REDIS:
        env["REDIS_URL"] = REDIS
    app = create_app(Settings.from_env(env))
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 20
        while not app.state.db.schema_ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield c


def _card(client: TestClient, **extra: Any) -> dict:
    tag = uuid.uuid4().hex[:10]
    r = client.post(
        "/api/prompt-cards",
        json={
            "title": f"Card {tag}",
            "prompt": f"Translate the zebrafish{tag} report",
            "tags": ["t"],
            "metadata": {"n": 1},
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/prompt-cards/{r.json()['id']}"
    return r.json()


def test_health_survives_pooled_connections_broken_earlier(client: TestClient) -> None:
    """Connections killed under the pool (as a cut link or a server restart leaves them) are not an
    outage: the comprehensive health's database check must still answer healthy at once."""
    assert client.get("/api/health/comprehensive").status_code == 200  # the pool holds connections now
    with psycopg.connect(DB or "", autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE usename = current_user AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    assert killed is not None
    assert killed[0] > 0
    answers = [client.get("/api/health/comprehensive") for _ in range(3)]
    checks = [{c["name"]: c["status"] for c in a.json()["checks"]} for a in answers]
    assert [a.status_code for a in answers] == [200, 200, 200], checks
    assert all(c["database"] == "healthy" for c in checks), checks


def test_crud_roundtrip(client: TestClient) -> None:
    card = _card(client, description=None, category="live")
    assert card["version"] == 1
    assert card["is_public"] is False
    cid = card["id"]
    first = client.get(f"/api/prompt-cards/{cid}")
    assert first.status_code == 200
    assert first.json() == card
    r = client.put(f"/api/prompt-cards/{cid}", json={"description": "d", "is_public": True})
    assert r.status_code == 200
    updated = r.json()
    assert updated["version"] == 2
    assert updated["title"] == card["title"]
    assert updated["description"] == "d"
    assert updated["updated_at"] > card["updated_at"]
    # Read-your-writes through the cache.
    assert client.get(f"/api/prompt-cards/{cid}").json() == updated
    assert client.delete(f"/api/prompt-cards/{cid}").status_code == 204
    assert client.get(f"/api/prompt-cards/{cid}").status_code == 404
    assert client.delete(f"/api/prompt-cards/{cid}").status_code == 404
    assert client.put(f"/api/prompt-cards/{cid}", json={"title": "x"}).status_code == 404


def test_cache_hit_and_invalidation(client: TestClient) -> None:
    require("PROMPTCARD_TEST_REDIS_URL", REDIS)
    cid = _card(client)["id"]
    assert client.get(f"/api/prompt-cards/{cid}").headers["x-cache"] == "MISS"
    assert client.get(f"/api/prompt-cards/{cid}").headers["x-cache"] == "HIT"
    client.put(f"/api/prompt-cards/{cid}", json={"title": "changed"})
    r = client.get(f"/api/prompt-cards/{cid}")
    assert r.headers["x-cache"] == "MISS"
    assert r.json()["title"] == "changed"
    q = {"category": f"c{uuid.uuid4().hex[:8]}"}
    assert client.get("/api/prompt-cards", params=q).headers["x-cache"] == "MISS"
    assert client.get("/api/prompt-cards", params=q).headers["x-cache"] == "HIT"
    _card(client, category=q["category"])
    r = client.get("/api/prompt-cards", params=q)
    assert r.headers["x-cache"] == "MISS"
    assert r.json()["total"] == 1


def test_list_search_and_paging(client: TestClient) -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    cards = [_card(client, category=cat) for _ in range(3)]
    r = client.get("/api/prompt-cards", params={"category": cat, "page_size": 2})
    body = r.json()
    assert body["total"] == 3
    assert len(body["items"]) == 2
    assert body["page"] == 1
    assert body["items"][0]["id"] == cards[-1]["id"]  # newest first
    assert (
        len(client.get("/api/prompt-cards", params={"category": cat, "page_size": 2, "page": 2}).json()["items"]) == 1
    )
    word = cards[0]["prompt"].split()[2]
    r = client.get("/api/prompt-cards", params={"q": word})
    assert [i["id"] for i in r.json()["items"]] == [cards[0]["id"]]
    assert client.get("/api/prompt-cards", params={"q": "the and of"}).json()["total"] == 0


def test_test_cases(client: TestClient) -> None:
    cid = _card(client)["id"]
    r = client.post(
        f"/api/prompt-cards/{cid}/test-cases",
        json={"name": "n", "input": {"text": "hi"}, "assertions": [{"contains": "x"}]},
    )
    assert r.status_code == 201
    assert r.json()["prompt_card_id"] == cid
    listed = client.get(f"/api/prompt-cards/{cid}/test-cases").json()
    assert listed["total"] == 1
    assert listed["items"][0]["input"] == {"text": "hi"}
    missing = str(uuid.uuid4())
    assert client.get(f"/api/prompt-cards/{missing}/test-cases").status_code == 404
    assert client.post(f"/api/prompt-cards/{missing}/test-cases", json={"name": "n", "input": {}}).status_code == 404
    assert client.delete(f"/api/prompt-cards/{cid}").status_code == 204  # cascades


text = st.text(max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    title=text,
    prompt=text,
    desc=st.none() | text,
    cat=st.none() | text,
    tags=st.none() | st.lists(text, max_size=3),
    q=text,
)
def test_fuzz_real_db_never_500(
    client: TestClient, title: str, prompt: str, desc: Any, cat: Any, tags: Any, q: str
) -> None:
    r = client.post(
        "/api/prompt-cards", json={"title": title, "prompt": prompt, "description": desc, "category": cat, "tags": tags}
    )
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        cid = r.json()["id"]
        assert client.put(f"/api/prompt-cards/{cid}", json={"category": cat}).status_code in (200, 422)
        assert client.delete(f"/api/prompt-cards/{cid}").status_code == 204
    assert client.get("/api/prompt-cards", params={"q": q}).status_code in (200, 422)
