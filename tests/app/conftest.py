"""Tests for the reference API (stacks/promptcard/app). They need the versions Debian bookworm
ships (fastapi 0.92 / pydantic 1): run them in the app venv, e.g.
    PYTHONPATH=stacks/promptcard/app /tmp/appvenv/bin/python -m pytest tests/app -p no:cacheprovider
In any other environment (e.g. the main project venv with pydantic 2) the directory is skipped at
collection, before any test module imports the app."""

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
        "promptcard app tests need fastapi 0.x + pydantic 1.x (Debian bookworm versions); "
        f"found fastapi={_major('fastapi')} pydantic={_major('pydantic')}"
    )
    collect_ignore_glob = ["test_*.py"]
else:
    # prometheus_client reads this at import time: a private dir per test session.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pc-metrics-"))


def pytest_report_header(config: object) -> str | None:
    return f"tests/app skipped: {SKIP_REASON}" if SKIP_REASON else None
