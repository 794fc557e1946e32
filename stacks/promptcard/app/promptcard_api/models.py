"""Request bodies (pydantic v1 API, as packaged by Debian bookworm)."""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, root_validator, validator

MAX_JSON_DEPTH = 32


def check_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL and psycopg cannot encode lone surrogates (which JSON
    allows): reject both here as a 422 instead of a database error later."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def check_json(value: Any, depth: int = 0) -> Any:
    """JSONB-safe values: bounded nesting, finite numbers, clean strings (keys included)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN/Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key))
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
    return value


class _Body(BaseModel):
    @validator("*", pre=False)
    def _clean(cls, value: Any) -> Any:
        return check_json(value) if not isinstance(value, (UUID, bool, int)) else value


Tags = list[str]


class CardCreate(_Body):
    title: str = Field(..., min_length=1, max_length=255)
    prompt: str = Field(..., min_length=1, max_length=100_000)
    description: str | None = Field(None, max_length=10_000)
    category: str | None = Field(None, max_length=100)
    tags: list[str] | None = Field(None, max_items=100)
    metadata: dict[str, Any] | None = None
    is_public: bool = False

    @validator("tags", each_item=True)
    def _tag(cls, value: str) -> str:
        if not value or len(value) > 100:
            raise ValueError("tags must be 1..100 characters")
        return value


class CardUpdate(CardCreate):
    """Partial update: only fields present in the body change."""

    title: str | None = Field(None, min_length=1, max_length=255)  # type: ignore[assignment]
    prompt: str | None = Field(None, min_length=1, max_length=100_000)  # type: ignore[assignment]
    is_public: bool | None = None  # type: ignore[assignment]

    @root_validator(pre=True)
    def _no_null_required(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in ("title", "prompt", "is_public"):
            if name in values and values[name] is None:
                raise ValueError(f"{name} may be omitted but not null")
        return values


class TestCaseCreate(_Body):
    name: str = Field(..., min_length=1, max_length=255)
    input: dict[str, Any]
    expected_output: str | None = Field(None, max_length=100_000)
    assertions: list[Any] | dict[str, Any] | None = None


class ExecuteRequest(_Body):
    input: str | dict[str, Any] | None = None
    test_case_id: UUID | None = None
