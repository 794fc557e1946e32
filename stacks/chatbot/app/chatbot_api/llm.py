"""The LLM link: an OpenAI-style chat completions endpoint (the local Ollama serves one)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

NOT_CONFIGURED = "no LLM configured (LLM_BASE_URL is unset)"


class LlmUnavailable(Exception):
    """No answer can be produced now; the message says why (for the 503 and the health report)."""


@dataclass(frozen=True)
class Answer:
    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"the LLM did not answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the LLM answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"the LLM is unreachable ({type(exc).__name__})"
    return f"the LLM answered something unreadable ({type(exc).__name__})"


class Llm:
    def __init__(
        self, base_url: str | None, model: str, api_key: str | None, timeout_s: float, health_ttl_s: float
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.health_ttl_s = health_ttl_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: no proxy variables can redirect the calls.
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=3.0), headers=headers, trust_env=False)
        self._lock = threading.Lock()
        self._status: tuple[float, str | None] = (0.0, NOT_CONFIGURED if base_url is None else "not probed yet")

    def close(self) -> None:
        self._client.close()

    def _remember(self, problem: str | None) -> None:
        with self._lock:
            self._status = (time.monotonic(), problem)

    def complete(self, messages: list[dict[str, str]]) -> Answer:
        if self.base_url is None:
            raise LlmUnavailable(NOT_CONFIGURED)
        try:
            resp = self._client.post(
                f"{self.base_url}/v1/chat/completions",
                json={"model": self.model, "messages": messages, "stream": False},
            )
            resp.raise_for_status()
            body = resp.json()
            content = body["choices"][0]["message"]["content"]
            usage = body.get("usage") or {}
            answer = Answer(
                str(content),
                str(body.get("model") or self.model),
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
            )
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            problem = _reason(exc)
            self._remember(problem)
            raise LlmUnavailable(problem) from exc
        self._remember(None)
        return answer

    def problem(self, timeout_s: float) -> str | None:
        """None when the LLM answers its model list, else why not. One probe per TTL serves every
        health request meanwhile: a burst of probes must not become a burst of LLM calls."""
        if self.base_url is None:
            return NOT_CONFIGURED
        with self._lock:
            checked, problem = self._status
            if time.monotonic() - checked < self.health_ttl_s:
                return problem
            # Claim this round so concurrent health requests answer from the last result.
            self._status = (time.monotonic(), problem)
        try:
            resp = self._client.get(f"{self.base_url}/v1/models", timeout=timeout_s)
            resp.raise_for_status()
            models = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
            found = (
                None
                if self.model in models or any(str(m).startswith(f"{self.model}:") for m in models)
                else (f"model {self.model!r} is not served (models: {', '.join(map(str, models)) or 'none'})")
            )
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            found = _reason(exc)
        self._remember(found)
        return found


def openai_messages(history: list[Any], content: str) -> list[dict[str, str]]:
    """Earlier messages of the conversation, then the new one, in the chat completions format."""
    return [{"role": m.role, "content": m.content} for m in history] + [{"role": "user", "content": content}]
