"""HTTP endpoints. Sync handlers (FastAPI runs them in its threadpool) over the sync pools."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import psycopg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import health, metrics
from .cache import Cache
from .config import Settings
from .db import SEARCH_EXPR, Database, DatabaseUnavailable
from .models import CardCreate, CardUpdate, ExecuteRequest, TestCaseCreate, check_text

router = APIRouter()
CARD_COLUMNS = "id, title, description, prompt, category, tags, metadata, created_at, updated_at, version, is_public"
TEST_CASE_COLUMNS = "id, prompt_card_id, name, input, expected_output, assertions, created_at"
RESULT_COLUMNS = "id, prompt_card_id, test_case_id, input, output, success, execution_time, metrics, executed_at"


class ApiError(Exception):
    """An error with a stable machine-readable code, rendered as {"error", "detail"}."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    body: bytes, status: int = 200, cache: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(headers or {})
    if cache:
        all_headers["X-Cache"] = cache
    return Response(content=body, status_code=status, media_type="application/json", headers=all_headers)


def _deps(request: Request) -> tuple:
    state = request.app.state
    return state.settings, state.db, state.cache


def _query_text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_text(value)
    except ValueError as exc:
        raise ApiError(
            422, "validation_error", [{"loc": ["query", name], "msg": str(exc), "type": "value_error"}]
        ) from None


def _not_found(what: str = "prompt card") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


# -- health & metrics -------------------------------------------------------------------------------
@router.get("/api/health")
async def liveness() -> dict[str, str]:
    # Liveness only: a dependency outage must not get the container restarted.
    return {"status": "ok"}


@router.get("/api/health/comprehensive")
async def comprehensive(request: Request) -> Response:
    settings, db, cache = _deps(request)
    timeout = settings.health_check_timeout_s

    def database() -> tuple:
        role = db.ping("primary", timeout)
        if not db.schema_ready.is_set():
            return health.UNHEALTHY, "reachable, schema migration pending"
        return health.HEALTHY, {"role": role}

    def replica() -> tuple:
        role = db.ping("replica", timeout)
        return (health.HEALTHY if role == "in recovery" else health.DEGRADED), {"role": role}

    def redis_probe() -> tuple:
        cache.ping()
        return health.HEALTHY, None

    def llm() -> tuple:
        resp = request.app.state.llm.get(f"{settings.llm_url}/api/tags", timeout=timeout)
        resp.raise_for_status()
        names = [m.get("name") for m in resp.json().get("models", []) if isinstance(m, dict)]
        if settings.llm_model not in names:
            return health.DEGRADED, f"model {settings.llm_model!r} not pulled"
        # Listed is not answering: one token proves the model loads and generates.
        answer = request.app.state.llm.post(
            f"{settings.llm_url}/api/generate",
            json={"model": settings.llm_model, "prompt": "ping", "stream": False, "options": {"num_predict": 1}},
            timeout=timeout,
        )
        answer.raise_for_status()
        if not answer.json().get("done"):
            return health.DEGRADED, "the model did not finish a one-token answer"
        return health.HEALTHY, {"models": len(names)}

    probes: dict[str, Any] = {"database": database}
    static: dict[str, tuple] = {}
    if db.replica is not None:
        probes["database_replica"] = replica
    if cache.enabled:
        probes["redis"] = redis_probe
    else:
        static["redis"] = (health.DEGRADED, "no Redis configured")
    if settings.llm_url:
        probes["llm"] = llm
    else:
        static["llm"] = (health.DEGRADED, "no LLM configured")
    body, code = await _comprehensive_runs.run(lambda: health.comprehensive(probes, timeout, static))
    return JSONResponse(body, status_code=code)


_comprehensive_runs: health.SingleFlight[tuple[dict[str, Any], int]] = health.SingleFlight()


@router.get("/metrics")
async def metrics_endpoint() -> Response:
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


# -- prompt cards ---------------------------------------------------------------------------------
@router.get("/api/prompt-cards")
def list_cards(
    request: Request,
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(20, ge=1, le=100),
    category: str | None = Query(None, max_length=100),
    q: str | None = Query(None, max_length=500),
) -> Response:
    _, db, cache = _deps(request)
    q = _query_text("q", q)
    q = q.strip() or None if q is not None else None
    category = _query_text("category", category)
    params = {"page": page, "page_size": page_size, "category": category, "q": q}
    body, gen, min_lsn = cache.get_list(params)
    if body is not None:
        return json_response(body, cache="HIT")

    where: list[str] = []
    args: dict[str, Any] = {"limit": page_size, "offset": (page - 1) * page_size, "q": q, "category": category}
    if category is not None:
        where.append("category = %(category)s")
    if q is not None:
        where.append(f"{SEARCH_EXPR} @@ plainto_tsquery('english', %(q)s)")
    where_sql = f"WHERE {' AND '.join(where)}" if where else ""
    order = f"ts_rank({SEARCH_EXPR}, plainto_tsquery('english', %(q)s)) DESC, " if q else ""

    def query(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        cur = conn.cursor(row_factory=dict_row)
        total = cur.execute(f"SELECT count(*) AS n FROM prompt_cards {where_sql}", args).fetchone()
        items = cur.execute(
            f"SELECT {CARD_COLUMNS} FROM prompt_cards {where_sql} "
            f"ORDER BY {order}created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            args,
        ).fetchall()
        return {"items": items, "page": page, "page_size": page_size, "total": total["n"] if total else 0}

    body = dumps(db.read_replica(query, min_lsn=min_lsn))
    cache.set_list(gen, params, body)
    return json_response(body, cache="MISS")


@router.post("/api/prompt-cards", status_code=201)
def create_card(request: Request, card: CardCreate) -> Response:
    _, db, cache = _deps(request)
    data = card.dict()

    def insert(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                "INSERT INTO prompt_cards (title, description, prompt, category, tags, metadata,"
                " is_public) VALUES (%(title)s, %(description)s, %(prompt)s, %(category)s, %(tags)s,"
                f" %(metadata)s, %(is_public)s) RETURNING {CARD_COLUMNS}",
                {**data, "metadata": Jsonb(data["metadata"]) if data["metadata"] is not None else None},
            )
            .fetchone()
        )

    row, lsn = db.write(insert)
    cache.invalidate(None, lsn)
    return json_response(dumps(row), status=201, headers={"Location": f"/api/prompt-cards/{row['id']}"})


@router.get("/api/prompt-cards/{card_id}")
def get_card(request: Request, card_id: UUID) -> Response:
    _, db, cache = _deps(request)
    key = str(card_id)
    body, gen = cache.get_card(key)
    if body is not None:
        return json_response(body, cache="HIT")
    # Primary, not replica: a client must read its own writes.
    row = db.read_primary(
        lambda conn: (
            conn.cursor(row_factory=dict_row)
            .execute(f"SELECT {CARD_COLUMNS} FROM prompt_cards WHERE id = %s", (card_id,))
            .fetchone()
        )
    )
    if row is None:
        raise _not_found()
    body = dumps(row)
    cache.set_card(key, gen, body)
    return json_response(body, cache="MISS")


@router.put("/api/prompt-cards/{card_id}")
def update_card(request: Request, card_id: UUID, card: CardUpdate) -> Response:
    _, db, cache = _deps(request)
    changes = card.dict(exclude_unset=True)
    if "metadata" in changes and changes["metadata"] is not None:
        changes["metadata"] = Jsonb(changes["metadata"])
    # Column names come from the model's fields only, never from the request.
    assignments = "".join(f"{name} = %({name})s, " for name in changes)

    def update(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"UPDATE prompt_cards SET {assignments}updated_at = now(), version = version + 1"
                f" WHERE id = %(id)s RETURNING {CARD_COLUMNS}",
                {**changes, "id": card_id},
            )
            .fetchone()
        )

    row, lsn = db.write(update)
    if row is None:
        raise _not_found()
    cache.invalidate(str(card_id), lsn)
    return json_response(dumps(row))


@router.delete("/api/prompt-cards/{card_id}", status_code=204)
def delete_card(request: Request, card_id: UUID) -> Response:
    _, db, cache = _deps(request)
    row, lsn = db.write(
        lambda conn: conn.execute("DELETE FROM prompt_cards WHERE id = %s RETURNING id", (card_id,)).fetchone()
    )
    if row is None:
        raise _not_found()
    cache.invalidate(str(card_id), lsn)
    return Response(status_code=204)


# -- test cases -----------------------------------------------------------------------------------
@router.get("/api/prompt-cards/{card_id}/test-cases")
def list_test_cases(request: Request, card_id: UUID) -> Response:
    _, db, _ = _deps(request)

    def query(conn: psycopg.Connection[Any]) -> list[dict[str, Any]] | None:
        cur = conn.cursor(row_factory=dict_row)
        if cur.execute("SELECT 1 FROM prompt_cards WHERE id = %s", (card_id,)).fetchone() is None:
            return None
        return cur.execute(
            f"SELECT {TEST_CASE_COLUMNS} FROM test_cases WHERE prompt_card_id = %s ORDER BY created_at, id",
            (card_id,),
        ).fetchall()

    items = db.read_primary(query)
    if items is None:
        raise _not_found()
    return json_response(dumps({"items": items, "total": len(items)}))


@router.post("/api/prompt-cards/{card_id}/test-cases", status_code=201)
def create_test_case(request: Request, card_id: UUID, test_case: TestCaseCreate) -> Response:
    _, db, _ = _deps(request)
    data = test_case.dict()

    def insert(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                "INSERT INTO test_cases (prompt_card_id, name, input, expected_output, assertions)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {TEST_CASE_COLUMNS}",
                (
                    card_id,
                    data["name"],
                    Jsonb(data["input"]),
                    data["expected_output"],
                    Jsonb(data["assertions"]) if data["assertions"] is not None else None,
                ),
            )
            .fetchone()
        )

    try:
        row, _lsn = db.write(insert)
    except pg_errors.ForeignKeyViolation:  # the FK check is the race-free existence check
        raise _not_found() from None
    return json_response(dumps(row), status=201)


# -- execution ------------------------------------------------------------------------------------
def compose_prompt(prompt: str, value: Any) -> str:
    """Fill {{name}} placeholders from an object input; otherwise append the input."""
    if value is None:
        return prompt
    if isinstance(value, dict):
        filled = prompt
        for name, item in value.items():
            filled = filled.replace("{{" + str(name) + "}}", item if isinstance(item, str) else json.dumps(item))
        return filled if filled != prompt else f"{prompt}\n\n{json.dumps(value)}"
    return f"{prompt}\n\n{value}"


@router.post("/api/prompt-cards/{card_id}/execute")
def execute(request: Request, card_id: UUID, body: ExecuteRequest | None = None) -> Response:
    settings, db, _ = _deps(request)
    if not settings.llm_url:
        raise ApiError(503, "llm_unavailable", "no LLM configured (set LLM_URL)")
    body = body or ExecuteRequest()

    def load(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        card = cur.execute("SELECT prompt FROM prompt_cards WHERE id = %s", (card_id,)).fetchone()
        if card is None or body.test_case_id is None:
            return card
        tc = cur.execute(
            "SELECT input FROM test_cases WHERE id = %s AND prompt_card_id = %s",
            (body.test_case_id, card_id),
        ).fetchone()
        return {**card, "test_input": tc["input"]} if tc else {**card, "missing_test_case": True}

    loaded = db.read_primary(load)  # no DB connection is held during the (slow) LLM call
    if loaded is None:
        raise _not_found()
    if loaded.get("missing_test_case"):
        raise _not_found("test case")
    value = body.input if body.input is not None else loaded.get("test_input")
    prompt = compose_prompt(loaded["prompt"], value)

    start = time.perf_counter()
    try:
        resp = request.app.state.llm.post(
            f"{settings.llm_url}/api/generate",
            json={
                "model": settings.llm_model,
                "prompt": prompt,
                "stream": False,
                "options": {"num_predict": settings.llm_max_tokens},
            },
            timeout=httpx.Timeout(settings.llm_timeout_s, connect=3.0),
        )
    except httpx.TimeoutException:
        metrics.LLM_CALLS.labels(result="timeout").inc()
        raise ApiError(504, "llm_timeout", f"LLM did not answer within {settings.llm_timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        metrics.LLM_CALLS.labels(result="unavailable").inc()
        raise ApiError(503, "llm_unavailable", health.describe_error(exc)) from exc
    elapsed_ms = int((time.perf_counter() - start) * 1000)
    try:
        resp.raise_for_status()
        payload = resp.json()
        output = payload["response"]
        if not isinstance(output, str):
            raise TypeError("'response' is not a string")
    except Exception as exc:  # a broken LLM answer is the LLM's failure, not ours
        metrics.LLM_CALLS.labels(result="error").inc()
        raise ApiError(503, "llm_error", health.describe_error(exc)) from exc
    metrics.LLM_CALLS.labels(result="ok").inc()
    stats = {
        k: payload[k]
        for k in ("model", "eval_count", "prompt_eval_count", "total_duration")
        if isinstance(payload.get(k), (str, int))
    }
    output = output.replace("\x00", "")  # NUL is not storable in PostgreSQL text

    def insert(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                "INSERT INTO execution_results (prompt_card_id, test_case_id, input, output, success,"
                f" execution_time, metrics) VALUES (%s, %s, %s, %s, true, %s, %s)"
                f" RETURNING {RESULT_COLUMNS}",
                (card_id, body.test_case_id, Jsonb({"input": value}), output, elapsed_ms, Jsonb(stats)),
            )
            .fetchone()
        )

    try:
        row, _lsn = db.write(insert)
    except pg_errors.ForeignKeyViolation:  # card deleted while the LLM was thinking
        raise _not_found() from None
    return json_response(dumps(row))


__all__ = ["ApiError", "Cache", "Database", "DatabaseUnavailable", "Settings", "router"]
