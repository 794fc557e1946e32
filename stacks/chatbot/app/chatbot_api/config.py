"""Settings from the environment (the stack file sets them); the LLM key may come from a file."""

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
    llm_timeout_s: float
    llm_health_ttl_s: float  # how long one LLM probe result answers health requests
    health_timeout_s: float
    history_messages: int  # earlier messages sent to the LLM as context

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_path=env.get("DATABASE_PATH") or "/data/chatbot.db",
            llm_base_url=(env.get("LLM_BASE_URL") or "").rstrip("/") or None,
            llm_model=env.get("LLM_MODEL") or "chatbot",
            llm_api_key=_secret(env, "LLM_API_KEY"),
            llm_timeout_s=_positive(env, "LLM_TIMEOUT_S", 30.0),
            llm_health_ttl_s=_positive(env, "LLM_HEALTH_TTL_S", 2.0),
            health_timeout_s=_positive(env, "HEALTH_TIMEOUT_S", 1.0),
            history_messages=int(_positive(env, "HISTORY_MESSAGES", 20)),
        )
