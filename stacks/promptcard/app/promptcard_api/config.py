"""Settings from the environment; every secret may also come from a NAME_FILE file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME_FILE wins over NAME so orchestrators can mount secrets instead of exporting them."""
    path = env.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
        return value or None
    return env.get(name) or None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be > 0")
    return value


def redact_url(url: str | None) -> str:
    """URL safe for logs: credentials replaced, so log lines never leak passwords."""
    if not url:
        return "<unset>"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if parts.username or parts.password:
            host = f"***@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparseable>"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    database_replica_url: str | None
    redis_url: str | None
    llm_url: str | None
    llm_model: str
    llm_timeout_s: float
    llm_max_tokens: int
    health_check_timeout_s: float
    cache_ttl_s: int
    db_pool_max_size: int
    db_pool_timeout_s: float
    db_connect_timeout_s: int
    db_statement_timeout_ms: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        llm_url = (env.get("LLM_URL") or "").rstrip("/") or None
        return cls(
            database_url=_secret(env, "DATABASE_URL"),
            database_replica_url=_secret(env, "DATABASE_REPLICA_URL"),
            redis_url=_secret(env, "REDIS_URL"),
            llm_url=llm_url,
            llm_model=env.get("LLM_MODEL") or "llama3.2:1b",
            llm_timeout_s=_float(env, "LLM_TIMEOUT_S", 60.0),
            # A bound on every answer: a model that never emits its end token would otherwise
            # run to its context size.
            llm_max_tokens=max(1, int(_float(env, "LLM_MAX_TOKENS", 256))),
            health_check_timeout_s=_float(env, "HEALTH_CHECK_TIMEOUT_S", 2.0),
            cache_ttl_s=max(1, int(_float(env, "CACHE_TTL_S", 30))),
            db_pool_max_size=max(1, int(_float(env, "DB_POOL_MAX_SIZE", 10))),
            db_pool_timeout_s=_float(env, "DB_POOL_TIMEOUT_S", 3.0),
            db_connect_timeout_s=max(1, int(_float(env, "DB_CONNECT_TIMEOUT_S", 3))),
            db_statement_timeout_ms=int(_float(env, "DB_STATEMENT_TIMEOUT_MS", 5000)),
        )
