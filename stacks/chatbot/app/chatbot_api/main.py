"""ASGI entry point: `python3 -m uvicorn chatbot_api.main:app --port 8000`.

Handlers are plain functions (FastAPI runs them in its thread pool) over the thread-local
SQLite connections and the synchronous LLM client.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, validator
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import metrics  # first: sets PROMETHEUS_MULTIPROC_DIR before prometheus_client loads
from .config import Settings
from .db import Conflict, DatabaseUnavailable, Message, NotFound, open_database
from .llm import Llm, LlmUnavailable, Stream, openai_messages

log = logging.getLogger("chatbot_api")
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_CONTENT = 16_000
MAX_PAGE = 10_000  # a full conversation in one read (a ledger reads every message back)
_ERROR_NAMES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _clean(value: str | None) -> str | None:
    # SQLite stores NUL and lone surrogates badly (truncation, encode errors): refuse them as 422.
    if value is not None:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        value.encode("utf-8")
    return value


class NewMessage(BaseModel):
    content: str = Field(..., min_length=1, max_length=MAX_CONTENT)
    reply: bool = True  # false: store the message only (no LLM answer wanted)
    stream: bool = False  # the answer as Server-Sent Events, piece by piece
    max_tokens: int | None = Field(None, ge=1, le=4096)  # else the API's LLM_MAX_TOKENS

    _text = validator("content", allow_reuse=True)(_clean)


class MessageCreate(NewMessage):
    client_id: str | None = Field(None, regex=ID_PATTERN)  # idempotency key: a retry is not stored twice


class ConversationCreate(BaseModel):
    title: str | None = Field(None, max_length=200)
    id: str | None = Field(None, regex=ID_PATTERN)  # a client-chosen id; else one is generated
    message: NewMessage | None = None  # "new chat": the first message in the same transaction

    _text = validator("title", allow_reuse=True)(_clean)


def _error(status: int, error: str, detail: Any = None, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


def _event(data: dict[str, Any], name: str | None = None) -> str:
    """One Server-Sent Event."""
    return (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"


def _errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # loc/msg/type only: "ctx" may echo the body or hold values JSON cannot encode.
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="chatbot-api", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(metrics.MetricsMiddleware)

    @app.on_event("startup")
    def startup() -> None:
        s = settings or Settings.from_env()
        app.state.settings = s
        app.state.db = open_database(s)
        app.state.db.open()
        app.state.llm = Llm(
            s.llm_base_url, s.llm_model, s.llm_api_key, s.llm_timeout_s, s.llm_health_ttl_s,
            s.llm_answer_timeout_s, s.llm_max_tokens,
        )  # fmt: skip
        log.info("llm: %s (model %s)", s.llm_base_url or "not configured", s.llm_model)
        if s.llm_timeout_s is None:
            log.warning("BROKEN VARIANT: no LLM timeout (CHATBOT_BROKEN_NO_LLM_TIMEOUT=1)")
        if s.broken_drop_on_llm_error:
            log.warning("BROKEN VARIANT: an LLM error drops the message (CHATBOT_BROKEN_DROP_ON_LLM_ERROR=1)")

    @app.on_event("shutdown")
    def shutdown() -> None:
        app.state.llm.close()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "validation_error", _errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _ERROR_NAMES.get(exc.status_code, "http_error"), exc.detail)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(DatabaseUnavailable)
    async def db_unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _error(503, "database_unavailable", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return _error(500, "internal_error")

    @app.get("/api/v1/health")
    def health(request: Request) -> JSONResponse:
        """Liveness with the state of each dependency. The database is essential (503, "down");
        the LLM only degrades the service (200, "degraded"): conversations still work."""
        state = request.app.state
        checks = []
        try:
            checks.append({"name": "database", "status": "healthy", "details": state.db.ping()})
        except DatabaseUnavailable as exc:
            checks.append({"name": "database", "status": "unhealthy", "details": str(exc)})
        problem = state.llm.problem(state.settings.health_timeout_s)
        checks.append({
            "name": "llm",
            "status": "degraded" if problem else "healthy",
            "details": problem or {"model": state.settings.llm_model},
        })  # fmt: skip
        database_ok, llm_ok = checks[0]["status"] == "healthy", problem is None
        status = "ok" if database_ok and llm_ok else "degraded" if database_ok else "down"
        body = {
            "status": status,
            "database": "ok" if database_ok else "unavailable",
            "llm": "ok" if llm_ok else "degraded",
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if database_ok else 503)

    @app.get("/metrics")
    def metrics_endpoint(request: Request) -> Response:
        body = metrics.render(request.app.state.db)
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)

    def unanswered(state: Any, message: Message, conversation: dict[str, Any] | None, exc: LlmUnavailable) -> None:
        metrics.LLM_REQUESTS.labels("unavailable").inc()
        if state.settings.broken_drop_on_llm_error:  # the broken variant: the stored message is lost
            if conversation:
                state.db.delete_conversation(message.conversation_id)
            else:
                state.db.delete_message(message.id)
        log.info("no answer for message %s: %s", message.id, exc)

    def store_reply(state: Any, message: Message, stream: Stream) -> Message:
        answer = stream.answer()
        metrics.LLM_REQUESTS.labels("ok").inc()
        metrics.MESSAGES.labels("assistant", answer.model).inc()
        metrics.TOKENS.labels(answer.model, "prompt").inc(answer.prompt_tokens)
        metrics.TOKENS.labels(answer.model, "completion").inc(answer.completion_tokens)
        reply, _ = state.db.add_message(message.conversation_id, "assistant", answer.content, model=answer.model)
        return reply  # type: ignore[no-any-return]

    def answer(state: Any, message: Message, ask: NewMessage, conversation: dict[str, Any] | None = None) -> Response:
        """Ask the LLM to answer the stored user message; store and return its answer. Without
        an answer the user's message stays stored and the response is 503 with the reason; a
        stream that breaks after it began ends with an ``error`` event with the reason."""
        history = state.db.history(message.conversation_id, message.id, state.settings.history_messages)
        extra = {"conversation": conversation} if conversation else {}
        try:
            stream = state.llm.stream(openai_messages(history, message.content), ask.max_tokens)
            if not ask.stream:
                for _ in stream:
                    pass
        except LlmUnavailable as exc:
            unanswered(state, message, conversation, exc)
            return _error(503, "llm_unavailable", str(exc), **extra, message=message.as_json())
        if not ask.stream:
            reply = store_reply(state, message, stream)
            return JSONResponse({**(conversation or {}), "message": message.as_json(), "reply": reply.as_json()}, 201)

        def events() -> Iterator[str]:
            # Named events frame the answer; its pieces are unnamed data events (as OpenAI streams).
            try:
                yield _event({**(conversation or {}), "message": message.as_json()}, "stored")
                try:
                    for piece in stream:
                        yield _event({"delta": piece})
                except LlmUnavailable as exc:
                    unanswered(state, message, conversation, exc)
                    failure = {"error": "llm_unavailable", "detail": str(exc), "message": message.as_json()}
                    yield _event(failure, "error")
                    return
                yield _event({"reply": store_reply(state, message, stream).as_json()}, "done")
            finally:
                stream.close()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx passes each event on at once
        # The background task, not only events()' finally: a client that hangs up cancels the
        # response, and Starlette never closes a sync body iterator; left to the garbage
        # collector, the LLM stream was closed in whatever thread it ran in, once inside httpcore's
        # pool lock, which that thread then waited for itself: every LLM call and health hung.
        return StreamingResponse(
            events(), status_code=200, media_type="text/event-stream", headers=headers,
            background=BackgroundTask(stream.close),
        )  # fmt: skip

    @app.post("/api/v1/conversations", status_code=201)
    def create_conversation(request: Request, body: ConversationCreate) -> Any:
        state = request.app.state
        first = body.message
        conversation, message = state.db.create_conversation(body.title, body.id, first.content if first else None)
        metrics.CONVERSATIONS.inc()
        if message is None:
            return conversation
        metrics.MESSAGES.labels("user", "").inc()
        if not first.reply:  # type: ignore[union-attr]
            return JSONResponse({**conversation, "message": message.as_json(), "reply": None}, status_code=201)
        return answer(state, message, first, conversation)  # type: ignore[arg-type]

    @app.get("/api/v1/conversations")
    def list_conversations(
        request: Request,
        limit: int = Query(20, ge=1, le=100),
        offset: int = Query(0, ge=0, le=1_000_000),
        q: str | None = Query(None, min_length=1, max_length=200),
    ) -> dict[str, Any]:
        items, total = request.app.state.db.list_conversations(limit, offset, q)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.get("/api/v1/conversations/{cid}")
    def get_conversation(request: Request, cid: str = Path(..., regex=ID_PATTERN)) -> dict[str, Any]:
        return request.app.state.db.get_conversation(cid)

    @app.delete("/api/v1/conversations/{cid}", status_code=204)
    def delete_conversation(request: Request, cid: str = Path(..., regex=ID_PATTERN)) -> Response:
        request.app.state.db.delete_conversation(cid)
        return Response(status_code=204)

    @app.get("/api/v1/conversations/{cid}/messages")
    def list_messages(
        request: Request,
        cid: str = Path(..., regex=ID_PATTERN),
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        items = request.app.state.db.list_messages(cid, after, limit)
        return {"items": [m.as_json() for m in items], "count": len(items)}

    @app.post("/api/v1/conversations/{cid}/messages", status_code=201)
    def post_message(request: Request, body: MessageCreate, cid: str = Path(..., regex=ID_PATTERN)) -> Response:
        """Store the user's message (committed before anything else happens), then answer it if wanted."""
        state = request.app.state
        message, created = state.db.add_message(cid, "user", body.content, client_id=body.client_id)
        if not created:
            return JSONResponse({"message": message.as_json(), "reply": None, "duplicate": True}, status_code=200)
        metrics.MESSAGES.labels("user", "").inc()
        if not body.reply:
            return JSONResponse({"message": message.as_json(), "reply": None}, status_code=201)
        return answer(state, message, body)

    @app.get("/api/v1/messages")
    def search_messages(
        request: Request,
        q: str = Query(..., min_length=1, max_length=200),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """Messages of every conversation containing ``q`` (a search over the user's chats)."""
        items = request.app.state.db.search_messages(q, limit)
        return {"items": [m.as_json() for m in items], "count": len(items)}

    return app


def _setup_logging() -> None:
    # Our own handler rather than basicConfig(): uvicorn's loggers propagate to the root logger.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("chatbot_api")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    logger.propagate = False


_setup_logging()
app = create_app()
