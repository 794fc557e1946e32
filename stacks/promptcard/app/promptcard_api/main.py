"""ASGI entry point: `python3 -m uvicorn promptcard_api.main:app --port 3001`."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from . import metrics  # first: sets PROMETHEUS_MULTIPROC_DIR before prometheus_client loads
from .cache import Cache, make_client
from .config import Settings, redact_url
from .db import Database, DatabaseUnavailable
from .routes import ApiError, router

log = logging.getLogger("promptcard_api")
MAX_BODY_BYTES = 1024 * 1024
_ERROR_NAMES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Bounded request bodies: a huge upload must not exhaust a worker's memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > MAX_BODY_BYTES
                except ValueError:
                    too_big = False
                if too_big:
                    await JSONResponse(
                        {"error": "payload_too_large", "detail": f"limit {MAX_BODY_BYTES} bytes"},
                        status_code=413,
                    )(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:  # chunked upload past the limit: body parsing fails (400)
                raise _BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)


def _clean_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # loc/msg/type only: "ctx" can echo the raw body or hold values JSON cannot encode.
    return [
        {
            "loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="promptcard-api", version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(metrics.MetricsMiddleware)

    @app.on_event("startup")
    def startup() -> None:
        s = settings or Settings.from_env()
        app.state.settings = s
        log.info("redis: %s, llm: %s", redact_url(s.redis_url), redact_url(s.llm_url))
        app.state.db = Database(s)
        app.state.db.open()  # never blocks: pools connect and migrations run in the background
        app.state.cache = Cache(make_client(s.redis_url) if s.redis_url else None, s.cache_ttl_s)
        app.state.llm = httpx.Client(timeout=httpx.Timeout(s.llm_timeout_s, connect=3.0), trust_env=False)

    @app.on_event("shutdown")
    def shutdown() -> None:
        app.state.db.close()
        app.state.llm.close()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "validation_error", "detail": _clean_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": _ERROR_NAMES.get(exc.status_code, "http_error"), "detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(DatabaseUnavailable)
    async def db_unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        metrics.DB_UNAVAILABLE.inc()
        return JSONResponse(
            {"error": "database_unavailable", "detail": exc.detail}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(psycopg.DataError)
    async def data_error(_: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input the database refuses (value out of range...): the client's fault, not a 500.
        return JSONResponse({"error": "invalid_data", "detail": type(exc).__name__}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return JSONResponse({"error": "internal_error"}, status_code=500)

    return app


def _setup_logging() -> None:
    # Our own handler rather than basicConfig(): uvicorn's loggers propagate to the root logger
    # and would print every line twice.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name, level in (
        ("promptcard_api", os.environ.get("LOG_LEVEL", "INFO").upper()),
        ("psycopg", "WARNING"),
    ):  # the pool logs every hand-out at INFO
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


_setup_logging()
app = create_app()
