"""The chatbot API in-process: conversations and messages in a temporary SQLite file, the LLM
link against an in-process OpenAI-style endpoint (httpx.MockTransport), health and metrics."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatbot_api.config import Settings
from chatbot_api.db import Database
from chatbot_api.llm import Llm
from chatbot_api.main import create_app
from fastapi.testclient import TestClient

APP_DIR = Path(__file__).resolve().parents[2] / "stacks" / "chatbot" / "app"


def settings(db: Path, llm: str | None = None) -> Settings:
    return Settings(
        database_path=str(db),
        llm_base_url=llm,
        llm_model="tiny",
        llm_api_key=None,
        llm_timeout_s=2.0,
        llm_answer_timeout_s=5.0,
        llm_max_tokens=64,
        llm_health_ttl_s=60.0,
        health_timeout_s=1.0,
        history_messages=20,
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path / "chat.db"))) as c:
        yield c


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"model": "tiny:latest", "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}


class FakeLlm:
    """An OpenAI-style endpoint (streamed answers, as Ollama sends them): records each request,
    answers ``echo CONTENT`` in two pieces, or ``status``, or raises ``fail``; ``break_after``
    pieces the stream breaks (a reset mid-stream). An unstreamed request is health's one-token
    probe: answered, or ``stall`` raised (a wedged model that still lists itself)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.models = ["tiny:latest"]
        self.fail: Exception | None = None
        self.break_after: int | None = None
        self.stall: Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": m} for m in self.models]})
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "boom"})
        asked = json.loads(request.content)
        if asked["stream"] is False:
            if self.stall is not None:
                raise self.stall
            choice = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}
            return httpx.Response(200, json={"model": "tiny:latest", "choices": [choice]})
        assert asked["stream"] is True
        pieces = [delta("echo "), delta(asked["messages"][-1]["content"])]
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        if self.break_after is None:
            return httpx.Response(200, content=sse(*pieces, usage), headers={"content-type": "text/event-stream"})
        sent = pieces[: self.break_after]

        def broken() -> Iterator[bytes]:
            for chunk in sent:
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            raise httpx.ReadError("connection reset by peer")

        return httpx.Response(200, stream=_Iter(broken()), headers={"content-type": "text/event-stream"})


class _Iter(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks


@pytest.fixture
def llm_client(tmp_path: Path) -> Iterator[tuple[TestClient, FakeLlm]]:
    fake = FakeLlm()
    with TestClient(create_app(settings(tmp_path / "chat.db", llm="http://llm:11434"))) as c:
        llm = c.app.state.llm  # type: ignore[attr-defined]
        llm._client = httpx.Client(transport=httpx.MockTransport(fake), timeout=2.0)
        yield c, fake


def new_conversation(client: TestClient, **body: Any) -> str:
    response = client.post("/api/v1/conversations", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- health ---------------------------------------------------------------------------------------
def test_health_without_an_llm_is_degraded_not_down(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["llm"]) == ("degraded", "ok", "degraded")
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["database"] == {
        "name": "database",
        "status": "healthy",
        "details": {"journal_mode": "wal", "synchronous": "full"},
    }
    assert checks["llm"]["status"] == "degraded"
    assert "LLM_BASE_URL is unset" in checks["llm"]["details"]


def test_health_is_down_when_the_database_is_broken(client: TestClient, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "chat.db")
    conn.execute("DROP TABLE messages")
    conn.commit()
    conn.close()
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("down", "unavailable")
    assert "messages missing" in body["checks"][0]["details"]


def test_health_ok_when_the_llm_serves_the_model(llm_client: tuple[TestClient, FakeLlm]) -> None:
    client, _ = llm_client
    body = client.get("/api/v1/health").json()
    assert (body["status"], body["llm"]) == ("ok", "ok")


def test_health_names_a_model_the_llm_does_not_serve(llm_client: tuple[TestClient, FakeLlm]) -> None:
    client, fake = llm_client
    fake.models = ["other"]
    body = client.get("/api/v1/health").json()
    assert (body["status"], body["llm"]) == ("degraded", "degraded")
    assert "model 'tiny' is not served (models: other)" in body["checks"][1]["details"]


def test_a_burst_of_health_probes_is_one_llm_probe_per_ttl(llm_client: tuple[TestClient, FakeLlm]) -> None:
    client, fake = llm_client
    for _ in range(20):
        assert client.get("/api/v1/health").status_code == 200
    assert [r.url.path for r in fake.requests] == ["/v1/models", "/v1/chat/completions"]
    probe = json.loads(fake.requests[1].content)
    assert (probe["model"], probe["max_tokens"], probe["stream"]) == ("tiny", 1, False)


def test_a_stale_health_result_is_answered_at_once_while_one_probe_refreshes_it(
    llm_client: tuple[TestClient, FakeLlm],
) -> None:
    """A health request never waits for the model after the first probe: the probe queues behind
    chats on the model's one slot, and a health p95 is not the model's latency."""
    client, fake = llm_client
    llm = client.app.state.llm  # type: ignore[attr-defined]
    assert client.get("/api/v1/health").json()["llm"] == "ok"  # the first call probes
    release, waiting = threading.Event(), []
    stalled = fake.__call__

    def slow(request: httpx.Request) -> httpx.Response:
        waiting.append(request.url.path)
        release.wait(5)
        return stalled(request)

    llm._client = httpx.Client(transport=httpx.MockTransport(slow), timeout=6.0)
    fake.models = ["other"]
    llm.health_ttl_s = 0.0  # every result stale
    took = []
    for _ in range(5):
        started = time.monotonic()
        body = client.get("/api/v1/health").json()
        took.append(time.monotonic() - started)
        assert body["llm"] == "ok", "the last result, while the refresh waits on the model"
    assert max(took) < 1.0, f"health waited for the model: {took}"
    assert waiting == ["/v1/models"], "one refresh for the whole burst"
    release.set()
    deadline = time.monotonic() + 5  # the app's own venv has no stackcheck: a plain poll
    while client.get("/api/v1/health").json()["llm"] != "degraded":
        assert time.monotonic() < deadline, "the refresh never landed"
        time.sleep(0.02)


def test_health_says_degraded_when_the_model_is_listed_but_generates_nothing(
    llm_client: tuple[TestClient, FakeLlm],
) -> None:
    """A wedged Ollama (ollama/ollama#17131) still lists its model: only a generation tells."""
    client, fake = llm_client
    fake.stall = httpx.ReadTimeout("stalled")
    body = client.get("/api/v1/health").json()
    assert (body["status"], body["database"], body["llm"]) == ("degraded", "ok", "degraded")
    reason = "model 'tiny' is listed but generates nothing: the LLM did not answer in time (ReadTimeout)"
    assert body["checks"][1]["details"] == reason


# -- conversations --------------------------------------------------------------------------------
def test_conversations_are_created_listed_and_deleted(client: TestClient) -> None:
    first = new_conversation(client, title="first chat")
    second = new_conversation(client, title="second chat", id="my-chat_2")
    assert second == "my-chat_2"
    listed = client.get("/api/v1/conversations").json()
    assert listed["total"] == 2
    assert {c["id"] for c in listed["items"]} == {first, second}
    assert [c["id"] for c in client.get("/api/v1/conversations", params={"q": "second"}).json()["items"]] == [second]
    assert client.get(f"/api/v1/conversations/{first}").json()["messages"] == 0
    assert client.delete(f"/api/v1/conversations/{first}").status_code == 204
    assert client.get(f"/api/v1/conversations/{first}").status_code == 404
    assert client.delete(f"/api/v1/conversations/{first}").status_code == 404


def test_title_search_takes_like_wildcards_literally(client: TestClient) -> None:
    new_conversation(client, title="100% sure")
    new_conversation(client, title="1000 things")
    found = client.get("/api/v1/conversations", params={"q": "100%"}).json()["items"]
    assert [c["title"] for c in found] == ["100% sure"]


def test_a_taken_conversation_id_is_a_conflict(client: TestClient) -> None:
    new_conversation(client, id="taken")
    response = client.post("/api/v1/conversations", json={"id": "taken"})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


@pytest.mark.parametrize(
    "body",
    [{"id": "has space"}, {"id": "x" * 65}, {"title": "t" * 201}, {"title": "nul\x00"}, {"message": {"content": ""}}],
)
def test_invalid_conversations_are_422(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/api/v1/conversations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


def test_a_new_chat_stores_its_first_message_in_the_same_request(client: TestClient) -> None:
    response = client.post(
        "/api/v1/conversations", json={"id": "c1", "title": "t", "message": {"content": "hi", "reply": False}}
    )
    assert response.status_code == 201
    assert response.json()["message"]["content"] == "hi"
    assert [m["content"] for m in client.get("/api/v1/conversations/c1/messages").json()["items"]] == ["hi"]


def test_a_new_chat_wanting_an_answer_without_an_llm_keeps_both(client: TestClient) -> None:
    response = client.post("/api/v1/conversations", json={"id": "c2", "message": {"content": "hello?"}})
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "llm_unavailable"
    assert body["conversation"]["id"] == "c2"
    assert body["message"]["content"] == "hello?"
    assert client.get("/api/v1/conversations/c2").json()["messages"] == 1


# -- messages -------------------------------------------------------------------------------------
def test_a_message_without_an_llm_is_stored_and_answered_503_with_the_reason(client: TestClient) -> None:
    cid = new_conversation(client)
    response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hello"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["error"] == "llm_unavailable"
    assert body["detail"] == "no LLM configured (LLM_BASE_URL is unset)"
    assert body["message"]["content"] == "hello"
    stored = client.get(f"/api/v1/conversations/{cid}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hello")]


def test_messages_are_listed_in_order_and_paged(client: TestClient) -> None:
    cid = new_conversation(client)
    ids = []
    for i in range(5):
        response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}", "reply": False})
        assert response.status_code == 201
        ids.append(response.json()["message"]["id"])
    page = client.get(f"/api/v1/conversations/{cid}/messages", params={"after": ids[1], "limit": 2}).json()
    assert [m["content"] for m in page["items"]] == ["m2", "m3"]
    assert client.get(f"/api/v1/conversations/{cid}/messages", params={"limit": 10_001}).status_code == 422


def test_a_retried_client_id_is_stored_once(client: TestClient) -> None:
    cid = new_conversation(client)
    body = {"content": "once", "reply": False, "client_id": "retry-1"}
    first = client.post(f"/api/v1/conversations/{cid}/messages", json=body)
    again = client.post(f"/api/v1/conversations/{cid}/messages", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert client.get(f"/api/v1/conversations/{cid}").json()["messages"] == 1


def test_messages_to_an_unknown_conversation_are_404(client: TestClient) -> None:
    response = client.post("/api/v1/conversations/nope/messages", json={"content": "x", "reply": False})
    assert response.status_code == 404
    assert client.get("/api/v1/conversations/nope/messages").status_code == 404
    assert client.get("/api/v1/conversations/bad%20id/messages").status_code == 422


def test_deleting_a_conversation_deletes_its_messages(client: TestClient) -> None:
    cid = new_conversation(client, message={"content": "gone-with-it", "reply": False})
    client.delete(f"/api/v1/conversations/{cid}")
    assert client.get("/api/v1/messages", params={"q": "gone-with-it"}).json()["count"] == 0


def test_message_search_spans_conversations(client: TestClient) -> None:
    for n in range(3):
        new_conversation(client, message={"content": f"ledger-run1-{n}", "reply": False})
    new_conversation(client, message={"content": "ledger-run2-0", "reply": False})
    found = client.get("/api/v1/messages", params={"q": "ledger-run1-", "limit": 10_000}).json()
    assert [m["content"] for m in found["items"]] == ["ledger-run1-0", "ledger-run1-1", "ledger-run1-2"]


# -- the LLM link ---------------------------------------------------------------------------------
def test_an_answer_is_stored_with_its_model_and_the_history_is_sent(llm_client: tuple[TestClient, FakeLlm]) -> None:
    client, fake = llm_client
    cid = new_conversation(client)
    first = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "one"})
    assert first.status_code == 201, first.text
    assert first.json()["reply"]["content"] == "echo one"
    assert first.json()["reply"]["model"] == "tiny:latest"
    client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "two"})
    sent = json.loads(fake.requests[-1].content)
    assert sent["model"] == "tiny"
    assert sent["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo one"},
        {"role": "user", "content": "two"},
    ]
    roles = [m["role"] for m in client.get(f"/api/v1/conversations/{cid}/messages").json()["items"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    metrics = client.get("/metrics").text
    assert 'chatbot_tokens_total{model="tiny:latest",type="completion"} 6.0' in metrics
    assert 'chatbot_llm_requests_total{result="ok"} 2.0' in metrics


@pytest.mark.parametrize(
    ("status", "fail", "reason"),
    [
        (500, None, "the LLM answered HTTP 500"),
        (200, httpx.ConnectError("refused"), "the LLM is unreachable (ConnectError)"),
        (200, httpx.ReadTimeout("slow"), "the LLM did not answer in time (ReadTimeout)"),
    ],
)
def test_an_llm_failure_keeps_the_message_and_says_why(
    llm_client: tuple[TestClient, FakeLlm], status: int, fail: Exception | None, reason: str
) -> None:
    client, fake = llm_client
    fake.status, fake.fail = status, fail
    cid = new_conversation(client)
    response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    assert response.status_code == 503
    assert response.json()["detail"] == reason
    assert client.get(f"/api/v1/conversations/{cid}").json()["messages"] == 1
    # The failed answer is the latest word on the LLM: health reports it without a new probe.
    health = client.get("/api/v1/health").json()
    assert (health["status"], health["llm"]) == ("degraded", "degraded")
    assert health["checks"][1]["details"] == reason


def events(text: str) -> list[tuple[str | None, Any]]:
    """(event name or None, decoded data) of each Server-Sent Event."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), json.loads(fields["data"])))
    return out


def test_a_streamed_answer_comes_as_server_sent_events_and_is_stored(
    llm_client: tuple[TestClient, FakeLlm],
) -> None:
    client, fake = llm_client
    cid = new_conversation(client)
    with client.stream(
        "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi", "stream": True, "max_tokens": 5}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        text = "".join(response.iter_text())
    named = events(text)
    assert named[0][0] == "stored"
    assert named[0][1]["message"]["content"] == "hi"
    assert named[1:-1] == [(None, {"delta": "echo "}), (None, {"delta": "hi"})]
    assert named[-1] == ("done", {"reply": named[-1][1]["reply"]})
    assert named[-1][1]["reply"]["content"] == "echo hi"
    assert json.loads(fake.requests[-1].content)["max_tokens"] == 5
    stored = client.get(f"/api/v1/conversations/{cid}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("assistant", "echo hi")]


def test_a_stream_broken_midway_ends_with_an_error_event_and_keeps_the_message(
    llm_client: tuple[TestClient, FakeLlm],
) -> None:
    client, fake = llm_client
    fake.break_after = 1
    cid = new_conversation(client)
    with client.stream("POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi", "stream": True}) as r:
        assert r.status_code == 200  # the stream had begun: the break is told in the stream
        text = "".join(r.iter_text())
    name, error = events(text)[-1]
    assert name == "error"
    assert error["detail"] == "the LLM stream broke after 1 pieces (the LLM is unreachable (ReadError))"
    # Unstreamed, the same break is a 503 with the reason.
    response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "again"})
    assert (response.status_code, response.json()["detail"]) == (503, error["detail"])
    stored = client.get(f"/api/v1/conversations/{cid}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("user", "again")]
    assert client.get("/api/v1/health").json()["llm"] == "degraded"


def test_a_client_gone_mid_stream_leaves_the_llm_stream_read_to_its_end() -> None:
    """Hanging up on Ollama mid-stream wedges it (ollama/ollama#17131): the API reads on instead."""
    ended = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        def chunks() -> Iterator[bytes]:
            for n in range(50):
                yield b"data: " + json.dumps(delta(f"w{n} ")).encode() + b"\n\n"
            ended.set()  # the whole answer was read: the LLM never saw a hang-up
            yield b"data: [DONE]\n\n"

        return httpx.Response(200, stream=_Iter(chunks()), headers={"content-type": "text/event-stream"})

    llm = Llm("http://llm:11434", "tiny", None, 2.0, 60.0, 5.0)
    llm._client = httpx.Client(transport=httpx.MockTransport(answer), timeout=2.0)
    stream = llm.stream([{"role": "user", "content": "a long story"}])
    assert next(iter(stream)) == "w0 "
    stream.close()  # the client went away after one piece
    assert ended.wait(5), "the LLM stream was hung up on mid-answer"


def test_a_client_gone_mid_stream_is_drained_at_once_not_when_the_garbage_collector_runs(tmp_path: Path) -> None:
    """Starlette does not close a streamed body's iterator when its client hangs up: left to the
    garbage collector, the LLM stream was closed in whichever thread the collector ran, once inside
    httpcore's pool lock, which it then waited for itself: the API answered nothing more (seen
    after 53 chat hang-ups). The API hands the stream to the drain when the response ends."""
    ended = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        def chunks() -> Iterator[bytes]:
            for n in range(50):
                yield b"data: " + json.dumps(delta(f"w{n} ")).encode() + b"\n\n"
            ended.set()
            yield b"data: [DONE]\n\n"

        return httpx.Response(200, stream=_Iter(chunks()), headers={"content-type": "text/event-stream"})

    body = json.dumps({"title": "gone", "message": {"content": "a long story", "stream": True}}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/v1/conversations", "raw_path": b"/api/v1/conversations", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        while sum(1 for m in sent if m.get("body")) < 2:  # stored, then a piece: then the tab closes
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with TestClient(create_app(settings(tmp_path / "chat.db", llm="http://llm:11434"))) as client:
        llm = client.app.state.llm  # type: ignore[attr-defined]
        llm._client = httpx.Client(transport=httpx.MockTransport(answer), timeout=2.0)
        gc.disable()  # no collection may close what the API left open
        try:
            asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
            assert sent[0]["status"] == 200
            assert ended.wait(5), "the hung-up stream was left to the garbage collector"
        finally:
            gc.enable()


def test_a_stream_that_fails_before_its_first_piece_is_a_503_not_a_stream(
    llm_client: tuple[TestClient, FakeLlm],
) -> None:
    client, fake = llm_client
    fake.fail = httpx.ConnectError("refused")
    cid = new_conversation(client)
    response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi", "stream": True})
    assert response.status_code == 503
    assert response.json()["detail"] == "the LLM is unreachable (ConnectError)"


class StallingLlm(ThreadingHTTPServer):
    """A real OpenAI-style server on 127.0.0.1 that waits ``stall_s`` before its first piece."""

    daemon_threads = True

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # the model list answers at once, as a wedged Ollama's does
                body = json.dumps({"object": "list", "data": [{"id": "chatbot:latest"}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                time.sleep(outer.stall_s)
                body = sse(delta("late"))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _timed_post(tmp_path: Path, env: dict[str, str], stall_s: float) -> tuple[int, float, Any]:
    server = StallingLlm(stall_s)
    try:
        s = Settings.from_env({"DATABASE_PATH": str(tmp_path / "c.db"), "LLM_BASE_URL": server.url, **env})
        with TestClient(create_app(s)) as client:
            cid = new_conversation(client)
            started = time.monotonic()
            response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
            return response.status_code, time.monotonic() - started, response.json()
    finally:
        server.shutdown()
        server.server_close()


def test_a_stalled_llm_is_cut_off_at_the_timeout_with_a_503(tmp_path: Path) -> None:
    status, took, body = _timed_post(tmp_path, {"LLM_TIMEOUT_S": "0.3"}, stall_s=2.0)
    assert status == 503
    assert body["detail"] == "the LLM did not answer in time (ReadTimeout)"
    assert 0.25 < took < 1.5, f"answered after {took:.2f}s"


def test_health_on_a_model_that_lists_but_stalls_is_degraded_within_its_timeout(tmp_path: Path) -> None:
    server = StallingLlm(stall_s=5.0)
    try:
        env = {"DATABASE_PATH": str(tmp_path / "c.db"), "LLM_BASE_URL": server.url, "HEALTH_TIMEOUT_S": "0.5"}
        with TestClient(create_app(Settings.from_env(env))) as client:
            started = time.monotonic()
            body = client.get("/api/v1/health").json()
            took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert (body["status"], body["llm"]) == ("degraded", "degraded")
    assert body["checks"][1]["details"].startswith("model 'chatbot' is listed but generates nothing: ")
    assert took < 1.5, f"health answered after {took:.2f}s: the probe must be bounded by HEALTH_TIMEOUT_S"


def test_the_broken_variant_without_an_llm_timeout_waits_as_long_as_the_llm(tmp_path: Path) -> None:
    """What the llm-slow scenario catches: this API hangs for as long as the model stalls."""
    status, took, body = _timed_post(tmp_path, {"LLM_TIMEOUT_S": "0.3", "CHATBOT_BROKEN_NO_LLM_TIMEOUT": "1"}, 1.5)
    assert status == 201, body
    assert took >= 1.5


def test_the_broken_variant_that_drops_the_message_on_an_llm_error(tmp_path: Path) -> None:
    """What the llm ledgers catch: a 503 that claims the message is stored, with nothing stored."""
    s = Settings.from_env({"DATABASE_PATH": str(tmp_path / "c.db"), "CHATBOT_BROKEN_DROP_ON_LLM_ERROR": "1"})
    assert s.broken_drop_on_llm_error
    with TestClient(create_app(s)) as client:
        created = client.post("/api/v1/conversations", json={"id": "gone", "message": {"content": "ledger-x-1"}})
        assert created.status_code == 503
        assert created.json()["message"]["content"] == "ledger-x-1"
        assert client.get("/api/v1/messages", params={"q": "ledger-x-"}).json()["count"] == 0
        assert client.get("/api/v1/conversations/gone").status_code == 404


# -- metrics --------------------------------------------------------------------------------------
def test_metrics_in_prometheus_text_format(client: TestClient) -> None:
    cid = new_conversation(client)
    client.get(f"/api/v1/conversations/{cid}")
    client.get("/api/v1/conversations/unknown-id")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'chatbot_requests_total{endpoint="/api/v1/conversations/{cid}",method="GET",status="200"}' in text
    assert 'chatbot_requests_total{endpoint="/api/v1/conversations/{cid}",method="GET",status="404"}' in text
    assert "chatbot_request_duration_seconds_bucket{" in text
    assert "chatbot_conversations_stored 1.0" in text
    assert "chatbot_conversations_total" in text


def test_active_sessions_count_conversations_written_in_within_five_minutes(tmp_path: Path) -> None:
    """Doc 002's chatbot_active_sessions: the API has no login, a conversation is the session."""
    db = tmp_path / "chat.db"
    with TestClient(create_app(settings(db))) as client:
        for cid in ("old", "recent"):
            new_conversation(client, id=cid, message={"content": f"hello {cid}", "reply": False})
        new_conversation(client, id="empty")  # no message at all: never active
        with sqlite3.connect(db) as conn:  # "old" was last written in 301 s ago
            conn.execute("UPDATE messages SET created_at = created_at - 301 WHERE conversation_id = 'old'")
        text = client.get("/metrics").text
    assert "chatbot_active_sessions 1.0" in text, text
    assert "chatbot_conversations_stored 3.0" in text


# -- durability -----------------------------------------------------------------------------------
def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Two Database objects (as two uvicorn workers have) writing at once: every write lands."""
    path = str(tmp_path / "shared.db")
    first, second = Database(path), Database(path)
    first.open()
    second.open()
    first.create_conversation("shared", "shared")
    errors: list[Exception] = []

    def writer(db: Database, tag: str) -> Callable[[], None]:
        def run() -> None:
            try:
                for i in range(100):
                    db.add_message("shared", "user", f"{tag}-{i}")
            except Exception as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=writer(db, tag)) for db, tag in ((first, "a"), (second, "b"), (first, "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(first.list_messages("shared", 0, 10_000)) == 300


CHILD = """
import sys
from chatbot_api.db import Database
db = Database(sys.argv[1])
db.open()
db.create_conversation("crash", "crash")
i = 0
while True:
    db.add_message("crash", "user", f"acked-{i}")
    print(i, flush=True)  # acknowledged: add_message returned after COMMIT
    i += 1
"""


def test_every_acknowledged_message_survives_a_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(APP_DIR)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    acked = [int(child.stdout.readline()) for _ in range(200)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    db = Database(str(path))
    stored = {m.content for m in db.list_messages("crash", 0, 100_000)}
    assert {f"acked-{i}" for i in acked} <= stored
