"""The chatbot API on its PostgreSQL backend (chatbot_api.db.PostgresDatabase, the PostgreSQL
profile): the API's own tests again, on a live server, plus what differs from SQLite (concurrent
writers and retries, the health details, an unreachable server).

The server: CHATBOT_TEST_DATABASE_URL (a superuser's postgresql://...). scripts/test points it at
the live postgres container it starts for Prompt Card's app tests; each test starts from empty
tables. Without it the module is skipped (a failure when STACKCHECK_REQUIRE_LIVE_DB=1)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from chatbot_api.db import DatabaseUnavailable, PostgresDatabase, open_database
from chatbot_api.main import create_app
from fastapi.testclient import TestClient

# The API's tests that hold for any backend, collected here again with this module's fixtures
# (not those that count process-wide metrics: their counters already hold the SQLite run's).
from test_api import (  # noqa: F401
    FakeLlm,
    settings,
    test_a_message_without_an_llm_is_stored_and_answered_503_with_the_reason,
    test_a_new_chat_stores_its_first_message_in_the_same_request,
    test_a_new_chat_wanting_an_answer_without_an_llm_keeps_both,
    test_a_retried_client_id_is_stored_once,
    test_a_stream_broken_midway_ends_with_an_error_event_and_keeps_the_message,
    test_a_streamed_answer_comes_as_server_sent_events_and_is_stored,
    test_a_taken_conversation_id_is_a_conflict,
    test_conversations_are_created_listed_and_deleted,
    test_deleting_a_conversation_deletes_its_messages,
    test_message_search_spans_conversations,
    test_messages_are_listed_in_order_and_paged,
    test_messages_to_an_unknown_conversation_are_404,
    test_title_search_takes_like_wildcards_literally,
)

URL = os.environ.get("CHATBOT_TEST_DATABASE_URL")
if not URL:
    if os.environ.get("STACKCHECK_REQUIRE_LIVE_DB") == "1":
        raise RuntimeError("STACKCHECK_REQUIRE_LIVE_DB=1 but CHATBOT_TEST_DATABASE_URL is not set")
    pytest.skip("no CHATBOT_TEST_DATABASE_URL: the PostgreSQL backend is not tested", allow_module_level=True)


@pytest.fixture(autouse=True)
def empty_tables() -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS messages, conversations")


UNUSED = Path("/nonexistent/unused.db")  # the SQLite path is never opened with a DATABASE_URL


def pg_app(llm: str | None = None) -> TestClient:
    return TestClient(create_app(dataclasses.replace(settings(UNUSED), llm_base_url=llm, database_url=URL)))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with pg_app() as c:
        assert isinstance(c.app.state.db, PostgresDatabase)  # type: ignore[attr-defined]
        yield c
        c.app.state.db.close()  # type: ignore[attr-defined]


@pytest.fixture
def llm_client() -> Iterator[tuple[TestClient, FakeLlm]]:
    fake = FakeLlm()
    with pg_app(llm="http://llm:11434") as c:
        c.app.state.llm._client = httpx.Client(transport=httpx.MockTransport(fake), timeout=2.0)  # type: ignore[attr-defined]
        yield c, fake
        c.app.state.db.close()  # type: ignore[attr-defined]


@pytest.fixture
def db() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(str(URL))
    database.open()
    yield database
    database.close()


def test_an_answer_is_stored_and_the_history_sent_from_postgresql(llm_client: tuple[TestClient, FakeLlm]) -> None:
    client, fake = llm_client
    cid = client.post("/api/v1/conversations", json={}).json()["id"]
    first = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "one"})
    assert first.status_code == 201, first.text
    assert (first.json()["reply"]["content"], first.json()["reply"]["model"]) == ("echo one", "tiny:latest")
    client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "two"})
    assert json.loads(fake.requests[-1].content)["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo one"},
        {"role": "user", "content": "two"},
    ]


def test_the_settings_pick_the_backend() -> None:
    base = settings(UNUSED)
    assert type(open_database(base)).__name__ == "Database", "SQLite stays the default"
    assert isinstance(open_database(dataclasses.replace(base, database_url=URL)), PostgresDatabase)


def test_health_names_postgresql_its_durability_and_tls(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    details = body["checks"][0]["details"]
    assert (body["database"], details["engine"], details["synchronous_commit"]) == ("ok", "postgresql", "on")
    assert isinstance(details["ssl"], bool)
    assert details["server_version"].startswith("15")


def test_an_unreachable_server_is_database_unavailable_not_a_500() -> None:
    db = PostgresDatabase("postgresql://nobody:x@127.0.0.1:9/none?connect_timeout=1")
    db.pool.timeout = 1.0
    db.pool.open(wait=False)  # the API's pool after the server went away: it keeps trying
    with pytest.raises(DatabaseUnavailable, match=r"PoolTimeout|OperationalError"):
        db.count_conversations()
    db.close()


def test_ids_increase_and_are_never_reused(db: PostgresDatabase) -> None:
    db.create_conversation("t", "c")
    first = [db.add_message("c", "user", f"m{i}")[0].id for i in range(3)]
    db.delete_message(first[-1])
    again = db.add_message("c", "user", "after")[0].id
    assert first == sorted(first)
    assert again > first[-1]
    assert [m.content for m in db.history("c", again + 1, 10)] == ["m0", "m1", "after"]


def _threads(count: int, work: Callable[[int], None]) -> list[Exception]:
    errors: list[Exception] = []

    def run(n: int) -> None:
        try:
            work(n)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writers_lose_nothing(db: PostgresDatabase) -> None:
    """Two databases (two uvicorn workers), three writers: every write lands, ids distinct."""
    other = PostgresDatabase(str(URL))
    other.open()  # a second worker creating the schema at the same time is fine (advisory lock)
    db.create_conversation("shared", "shared")
    errors = _threads(3, lambda n: [(db, other)[n % 2].add_message("shared", "user", f"{n}-{i}") for i in range(100)])
    other.close()
    assert errors == []
    stored = db.list_messages("shared", 0, 10_000)
    assert len({m.id for m in stored}) == 300


def test_a_retry_racing_the_original_is_stored_once(db: PostgresDatabase) -> None:
    db.create_conversation("t", "c")
    results: list[tuple[int, bool]] = []

    def retry(_: int) -> None:
        message, created = db.add_message("c", "user", "x", None, "k")
        results.append((message.id, created))

    assert _threads(8, retry) == []
    assert len({i for i, _ in results}) == 1, "one message, whoever won"
    assert sorted(created for _, created in results) == [False] * 7 + [True]
