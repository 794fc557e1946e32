"""The comprehensive health's llm check against a fake Ollama (httpx MockTransport): listed is
not enough, the model must finish a one-token answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from promptcard_api.config import Settings
from promptcard_api.main import create_app

MODEL = "stackcheck-tiny:latest"


def _fake_ollama(generate: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            return httpx.Response(200, json={"models": [{"name": MODEL}]})
        return generate(request)

    return httpx.Client(transport=httpx.MockTransport(handle))


@pytest.fixture
def client() -> Iterator[TestClient]:
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:pw@127.0.0.1:1/app",
            "DB_POOL_TIMEOUT_S": "0.2",
            "HEALTH_CHECK_TIMEOUT_S": "0.5",
            "LLM_URL": "http://ollama:11434",
            "LLM_MODEL": MODEL,
        }
    )
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c


def _llm_check(client: TestClient) -> dict[str, object]:
    checks = {c["name"]: c for c in client.get("/api/health/comprehensive").json()["checks"]}
    return checks["llm"]


def test_a_model_that_answers_one_token_is_healthy(client: TestClient) -> None:
    asked: list[dict[str, object]] = []

    def generate(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content))
        return httpx.Response(200, json={"response": "x", "done": True})

    client.app.state.llm = _fake_ollama(generate)  # type: ignore[attr-defined]
    assert _llm_check(client)["status"] == "healthy"
    assert asked == [{"model": MODEL, "prompt": "ping", "stream": False, "options": {"num_predict": 1}}]


def test_a_listed_model_that_fails_to_answer_is_not_healthy(client: TestClient) -> None:
    client.app.state.llm = _fake_ollama(lambda _: httpx.Response(500, json={"error": "model failed to load"}))  # type: ignore[attr-defined]
    check = _llm_check(client)
    assert check["status"] != "healthy"
    assert "500" in str(check["details"])
