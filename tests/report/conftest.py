"""Sample runs for the report tests, copied from tests/report/data/ into a fresh reports dir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"

MakeRun = Callable[..., Path]


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def history_entries() -> list[dict[str, Any]]:
    """Earlier load runs as the history store keeps them (RunRecord: profile name, metrics, verdict)."""
    p95s = [(30.1, "unchanged"), (31.5, "unchanged"), (29.8, "unchanged"), (45.2, "regressed")]
    return [
        {
            "run_id": f"20261121T0{i}0000Z-load",
            "created_at": f"2026-11-21T0{i}:00:00+00:00",
            "profile": "smoke",
            "git_rev": "7422e52",
            "mode": "closed",
            "metrics": {"count": 1700, "errors": 0, "rps": 56.0, "percentiles_ms": {"p50": 4.1, "p95": p95}},
            "verdict": verdict,
        }
        for i, (p95, verdict) in enumerate(p95s)
    ]


@pytest.fixture
def make_run(tmp_path: Path) -> MakeRun:
    """``make_run("clean", load=[...])``: reports/<run-id>/results.json from a sample, keys replaced."""

    def make(name: str, **changes: Any) -> Path:
        data = {**sample(name), **changes}
        run_dir = tmp_path / "reports" / data["run_id"]
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(data))
        return run_dir

    return make
