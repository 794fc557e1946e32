"""Settings from the environment (the stack file sets them); the LLM key and the database URL may
come from a file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, not {raw!r}")
    return value


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME_FILE wins over NAME, so a key can be mounted instead of exported."""
    path = env.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    return env.get(name) or None


@dataclass(frozen=True)
class Settings:
    database_path: str
    llm_base_url: str | None  # OpenAI-style: {base}/v1/chat/completions; None: no LLM configured
    llm_model: str
    llm_api_key: str | None
    llm_timeout_s: float | None  # each piece of an answer (the first token too); None: broken variant
    llm_answer_timeout_s: float | None  # the whole answer
    llm_max_tokens: int  # per answer, unless a message asks for fewer or more
    llm_health_ttl_s: float  # how long one LLM probe result answers health requests
    health_timeout_s: float
    history_messages: int  # earlier messages sent to the LLM as context
    # BROKEN VARIANTS, for the tests that show the chaos objectives fail (never set in a stack):
    broken_drop_on_llm_error: bool = False  # an LLM error deletes the conversation's new message
    # postgresql://... (DATABASE_URL, or a file named by DATABASE_URL_FILE): the PostgreSQL
    # profile; None: the SQLite file at database_path (the default).
    database_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        # The broken variant "no LLM timeout": waits for the LLM as long as it takes.
        no_timeout = env.get("CHATBOT_BROKEN_NO_LLM_TIMEOUT") == "1"
        return cls(
            database_path=env.get("DATABASE_PATH") or "/data/chatbot.db",
            llm_base_url=(env.get("LLM_BASE_URL") or "").rstrip("/") or None,
            llm_model=env.get("LLM_MODEL") or "chatbot",
            llm_api_key=_secret(env, "LLM_API_KEY"),
            llm_timeout_s=None if no_timeout else _positive(env, "LLM_TIMEOUT_S", 30.0),
            llm_answer_timeout_s=None if no_timeout else _positive(env, "LLM_ANSWER_TIMEOUT_S", 60.0),
            llm_max_tokens=int(_positive(env, "LLM_MAX_TOKENS", 64)),
            llm_health_ttl_s=_positive(env, "LLM_HEALTH_TTL_S", 2.0),
            health_timeout_s=_positive(env, "HEALTH_TIMEOUT_S", 1.0),
            history_messages=int(_positive(env, "HISTORY_MESSAGES", 20)),
            broken_drop_on_llm_error=env.get("CHATBOT_BROKEN_DROP_ON_LLM_ERROR") == "1",
            database_url=_secret(env, "DATABASE_URL"),
        )
