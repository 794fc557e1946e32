"""The LLM link: an OpenAI-style chat completions endpoint (the local Ollama serves one), always
streamed, so an answer can be passed on token by token and a stall is seen between tokens.

Timeouts: ``timeout_s`` bounds the wait for each piece (the first token included), and
``answer_timeout_s`` the whole answer: a model that trickles forever is cut off too.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import threading
import time
from collections.abc import Generator, Iterator
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


@dataclass
class Stream:
    """One answer being streamed: iterate for the content pieces; ``answer()`` once it is done."""

    model: str
    pieces: Iterator[str] = iter(())
    source: Generator[str, None, None] | None = None  # the LLM response being read
    content: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self.content += piece
            yield piece

    def close(self) -> None:
        """The client went away: the rest of the answer is read in the background and dropped,
        not hung up on. Ollama <= 0.17.4 loses a runner slot for good to each client that hangs up
        mid-stream (ollama/ollama#17131): one closed browser tab would wedge the model for every
        user. Bounded like any answer: the piece and answer timeouts, max_tokens."""
        source, self.source = self.source, None
        if source is not None and inspect.getgeneratorstate(source) != inspect.GEN_CLOSED:
            threading.Thread(target=_drain, args=(source,), name="llm-drain", daemon=True).start()

    def answer(self) -> Answer:
        return Answer(self.content, self.model, self.prompt_tokens, self.completion_tokens)


def _drain(source: Generator[str, None, None]) -> None:
    with contextlib.suppress(LlmUnavailable):  # already remembered for health by _chunks
        for _ in source:
            pass


class Llm:
    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key: str | None,
        timeout_s: float | None,
        health_ttl_s: float,
        answer_timeout_s: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.health_ttl_s = health_ttl_s
        self.answer_timeout_s = answer_timeout_s
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # None: no timeout at all (only the broken test variant runs so). trust_env=False: no
        # proxy variables can redirect the calls.
        timeout = httpx.Timeout(timeout_s, connect=3.0) if timeout_s is not None else httpx.Timeout(None)
        self._client = httpx.Client(timeout=timeout, headers=headers, trust_env=False)
        self._lock = threading.Lock()
        self._status: tuple[float, str | None] = (0.0, NOT_CONFIGURED if base_url is None else "not probed yet")
        self._probing = False  # one health probe at a time

    def close(self) -> None:
        self._client.close()

    def _remember(self, problem: str | None) -> None:
        with self._lock:
            self._status = (time.monotonic(), problem)

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Stream:
        """The answer as a stream; LlmUnavailable (with the reason) if it fails to start or
        breaks on the way: the first piece is awaited here, so a dead or stalled LLM is known
        before anything is sent to the client."""
        if self.base_url is None:
            raise LlmUnavailable(NOT_CONFIGURED)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if max_tokens or self.max_tokens:
            body["max_tokens"] = max_tokens or self.max_tokens
        body["stream_options"] = {"include_usage": True}
        stream = Stream(self.model)
        chunks = self._chunks(body, time.monotonic(), stream)
        first = next(chunks, None)
        stream.pieces = itertools.chain([first] if first is not None else [], chunks)
        stream.source = chunks
        return stream

    def _chunks(self, body: dict[str, Any], started: float, stream: Stream) -> Generator[str, None, None]:
        pieces = 0
        try:
            with self._client.stream("POST", f"{self.base_url}/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if self.answer_timeout_s is not None and time.monotonic() - started > self.answer_timeout_s:
                        raise httpx.ReadTimeout(f"no complete answer within {self.answer_timeout_s:g}s")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    stream.model = str(chunk.get("model") or stream.model)
                    usage = chunk.get("usage") or {}
                    if usage:
                        stream.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        stream.completion_tokens = int(usage.get("completion_tokens") or 0)
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            pieces += 1
                            yield str(piece)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problem = _reason(exc) if not pieces else f"the LLM stream broke after {pieces} pieces ({_reason(exc)})"
            self._remember(problem)
            raise LlmUnavailable(problem) from exc
        if not stream.completion_tokens:
            stream.completion_tokens = pieces
        self._remember(None)

    def complete(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Answer:
        stream = self.stream(messages, max_tokens)
        for _ in stream:
            pass
        return stream.answer()

    def problem(self, timeout_s: float) -> str | None:
        """None when the LLM serves the model and generates a token with it, else why not. The
        first call probes; after that a stale result starts one probe in the background and is
        answered meanwhile: a health request never waits for the model (the probe queues behind
        chats on the model's one slot; a health p95 of 102 ms against 100 in CI was that wait),
        and a burst of health requests is never a burst of LLM calls. Stale by at most the TTL
        plus one probe."""
        if self.base_url is None:
            return NOT_CONFIGURED
        with self._lock:
            checked, problem = self._status
            if self._probing or time.monotonic() - checked < self.health_ttl_s:
                return problem
            self._probing = True
        if checked == 0.0:  # never probed: this answer is the probe's
            return self._refresh(timeout_s)
        threading.Thread(target=self._refresh, args=(timeout_s,), name="llm-health", daemon=True).start()
        return problem

    def _refresh(self, timeout_s: float) -> str | None:
        try:
            found = self._probe(time.monotonic() + timeout_s)
        except Exception as exc:  # never leave _probing set: health would answer an old result forever
            found = f"the LLM health probe failed: {exc!r}"
        with self._lock:  # the result and the end of the round at once: no second probe in between
            self._status, self._probing = (time.monotonic(), found), False
        return found

    def _probe(self, deadline: float) -> str | None:
        """The model list, then a one-token answer, both within the deadline."""
        try:
            resp = self._client.get(f"{self.base_url}/v1/models", timeout=max(deadline - time.monotonic(), 0.05))
            resp.raise_for_status()
            models = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return _reason(exc)
        if self.model not in models and not any(str(m).startswith(f"{self.model}:") for m in models):
            return f"model {self.model!r} is not served (models: {', '.join(map(str, models)) or 'none'})"
        # Listed is not answering: a wedged Ollama still lists its model (ollama/ollama#17131).
        # Unstreamed on purpose: Ollama <= 0.17.4 loses a runner slot for good to every client that
        # hangs up mid-stream (the same issue), so a probe that times out must not be one.
        body = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        try:
            resp = self._client.post(
                f"{self.base_url}/v1/chat/completions", json={**body, "stream": False},
                timeout=max(deadline - time.monotonic(), 0.05),
            )  # fmt: skip
            resp.raise_for_status()
            choices = resp.json().get("choices") or [{}]
            if not choices[0].get("finish_reason"):
                return f"model {self.model!r} did not finish a one-token answer"
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            return f"model {self.model!r} is listed but generates nothing: {_reason(exc)}"
        return None


def openai_messages(history: list[Any], content: str) -> list[dict[str, str]]:
    """Earlier messages of the conversation, then the new one, in the chat completions format."""
    return [{"role": m.role, "content": m.content} for m in history] + [{"role": "user", "content": content}]
