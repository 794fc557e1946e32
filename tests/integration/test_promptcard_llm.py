"""Prompt Card with its model: the execute endpoint runs a card's test case on the real Ollama
(the tiny generated model) and stores the execution result, read back from PostgreSQL itself;
comprehensive health asks the model for one token, and says so when the link is down."""

from __future__ import annotations

import time

import pytest

from stackcheck.chaos import faults
from stackcheck.stack import Stack

pytestmark = pytest.mark.docker


def _llm_status(stack: Stack) -> tuple[str, str]:
    """(the llm check's status, the overall status)."""
    with stack.http() as api:
        body = api.get("/api/health/comprehensive").json()
    return str(next(c["status"] for c in body["checks"] if c["name"] == "llm")), str(body["status"])


def test_execute_runs_a_test_case_on_the_model_and_stores_the_result(stack: Stack) -> None:
    with stack.http(timeout=30) as api:
        card = api.post("/api/prompt-cards", json={"title": "llm", "prompt": "Summarise {{text}}"}).json()
        case = api.post(
            f"/api/prompt-cards/{card['id']}/test-cases",
            json={"name": "hello", "input": {"text": "hello world"}, "expected_output": "hi"},
        ).json()
        executed = api.post(f"/api/prompt-cards/{card['id']}/execute", json={"test_case_id": case["id"]})
    assert executed.status_code == 200, executed.text
    result = executed.json()
    # The stored row, from the database rather than the API's answer.
    with stack.postgres() as conn:
        row = conn.execute(
            "SELECT test_case_id::text, output, success, metrics FROM execution_results WHERE id = %s",
            (result["id"],),
        ).fetchone()
    assert row is not None, "the execution result was not stored"
    test_case_id, output, success, metrics = row
    assert test_case_id == case["id"]
    assert success is True
    assert output == result["output"]
    assert output.strip(), "the model returned no text"
    assert metrics["model"] == "stackcheck-tiny:latest"
    assert metrics["eval_count"] == 32, "LLM_MAX_TOKENS bounds the answer (the random model never stops on its own)"


def test_health_asks_the_model_and_degrades_without_it(stack: Stack) -> None:
    assert _llm_status(stack) == ("healthy", "healthy")
    with faults.link_down(stack.link("backend->ollama")):
        # The model is not critical: the API still serves cards, so the stack is degraded, not down.
        assert _llm_status(stack) == ("unhealthy", "degraded")
        with stack.http(timeout=30) as api:
            card = api.post("/api/prompt-cards", json={"title": "llm down", "prompt": "p"}).json()
            refused = api.post(f"/api/prompt-cards/{card['id']}/execute", json={"input": "x"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "llm_unavailable"
    deadline = time.monotonic() + 10
    while _llm_status(stack) != ("healthy", "healthy"):
        assert time.monotonic() < deadline, "the llm check did not recover within 10 s of the link's return"
        time.sleep(0.2)
