"""Tests for the chatbot API (stacks/chatbot/app), in-process with FastAPI's TestClient against a
temporary SQLite file. They need the versions Debian bookworm ships (fastapi 0.92 / pydantic 1),
as the Prompt Card app's tests do: scripts/test runs them in .venv-app with
    PYTHONPATH=stacks/chatbot/app .venv-app/bin/python -m pytest tests/app_chatbot
Anywhere else (the project venv has no fastapi) the directory is skipped at collection."""

from __future__ import annotations

import os
import tempfile
from importlib import metadata


def _major(dist: str) -> int | None:
    try:
        return int(metadata.version(dist).split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None


SKIP_REASON = None
if _major("fastapi") != 0 or _major("pydantic") != 1:
    SKIP_REASON = (
        "chatbot app tests need fastapi 0.x + pydantic 1.x (Debian bookworm versions); "
        f"found fastapi={_major('fastapi')} pydantic={_major('pydantic')}"
    )
    collect_ignore_glob = ["test_*.py"]
else:
    # prometheus_client reads this at import time: a private dir per test session.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="chatbot-metrics-"))


def pytest_report_header(config: object) -> str | None:
    return f"tests/app_chatbot skipped: {SKIP_REASON}" if SKIP_REASON else None
