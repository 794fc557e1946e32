"""Run history: every load run's metrics, and every DR drill's record (``stackcheck drill``), in
SQLite (default) or PostgreSQL (``--history-url``).

A run joins the baseline of its comparison key (stack, profile, mode, machine fingerprint) when
its verdict is ``unchanged`` or ``no-baseline``; a regressed or improved run does not, unless
accepted with ``--update-baseline``, which also starts a new baseline epoch from that run so
older runs stop counting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from stackcheck.load.errors import HistoryError

DEFAULT_HISTORY = Path("reports") / "history.sqlite"  # under the directory stackcheck runs in

SCHEMA = """
CREATE TABLE IF NOT EXISTS load_runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    stack TEXT NOT NULL,
    git_rev TEXT NOT NULL,
    profile TEXT NOT NULL,
    profile_hash TEXT NOT NULL,
    mode TEXT NOT NULL,
    workers INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    cpu_model TEXT NOT NULL,
    cores INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    interval_p95 TEXT NOT NULL,
    verdict TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    epoch INTEGER NOT NULL
)"""
DRILL_SCHEMA = """
CREATE TABLE IF NOT EXISTS drill_runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    drill TEXT NOT NULL,
    scenario TEXT NOT NULL,
    stack TEXT NOT NULL,
    git_rev TEXT NOT NULL,
    rto_s DOUBLE PRECISION,
    rto_objective_s DOUBLE PRECISION,
    rpo_s DOUBLE PRECISION,
    rpo_objective_s DOUBLE PRECISION,
    acknowledged INTEGER,
    lost INTEGER,
    passed INTEGER NOT NULL,
    breaches TEXT NOT NULL,
    operator TEXT,
    reviewer TEXT,
    accepted INTEGER
)"""
DRILL_COLUMNS = (
    "run_id, created_at, drill, scenario, stack, git_rev, rto_s, rto_objective_s, rpo_s, rpo_objective_s,"
    " acknowledged, lost, passed, breaches, operator, reviewer, accepted"
)
COLUMNS = (
    "run_id, created_at, stack, git_rev, profile, profile_hash, mode, workers, fingerprint, cpu_model, cores,"
    " metrics, interval_p95, verdict, accepted, epoch"
)


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.cpu_model}|{self.cores}".encode()).hexdigest()[:12]

    @classmethod
    def this(cls) -> Machine:
        model = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        return cls(model, os.cpu_count() or 1)


def git_revision(path: Path) -> str:
    """The commit of the repository holding ``path``, ``+dirty`` when its directory has local changes."""
    where = path if path.is_dir() else path.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}+dirty" if dirty else rev


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    created_at: str
    stack: str
    git_rev: str
    profile: str
    profile_hash: str
    mode: str
    workers: int
    machine: Machine
    metrics: dict[str, Any]
    interval_p95: list[float]
    verdict: str
    accepted: bool
    epoch: int

    def row(self) -> tuple[Any, ...]:
        return (
            self.run_id, self.created_at, self.stack, self.git_rev, self.profile, self.profile_hash, self.mode,
            self.workers, self.machine.fingerprint, self.machine.cpu_model, self.machine.cores,
            json.dumps(self.metrics), json.dumps(self.interval_p95), self.verdict, int(self.accepted), self.epoch,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RunRecord:
        (
            run_id,
            created,
            stack,
            rev,
            profile,
            phash,
            mode,
            workers,
            _fp,
            cpu,
            cores,
            metrics,
            p95s,
            verdict,
            acc,
            ep,
        ) = row
        return cls(
            run_id, created, stack, rev, profile, phash, mode, int(workers), Machine(cpu, int(cores)),
            json.loads(metrics), json.loads(p95s), verdict, bool(acc), int(ep),
        )  # fmt: skip


@dataclass(frozen=True)
class DrillRecord:
    """One DR drill as the history keeps it: what was measured against the tier's objectives, the
    verdict, and the sign-off fields (reviewer and acceptance are filled in by hand: None until then)."""

    run_id: str
    created_at: str
    drill: str
    scenario: str
    stack: str
    git_rev: str
    rto_s: float | None
    rto_objective_s: float | None
    rpo_s: float | None
    rpo_objective_s: float | None
    acknowledged: int | None
    lost: int | None
    passed: bool
    breaches: tuple[str, ...]
    operator: str | None = None
    reviewer: str | None = None
    accepted: bool | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.run_id, self.created_at, self.drill, self.scenario, self.stack, self.git_rev, self.rto_s,
            self.rto_objective_s, self.rpo_s, self.rpo_objective_s, self.acknowledged, self.lost, int(self.passed),
            json.dumps(list(self.breaches)), self.operator, self.reviewer,
            None if self.accepted is None else int(self.accepted),
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> DrillRecord:
        (run_id, created, drill, scenario, stack, rev, rto, rto_obj, rpo, rpo_obj, acked, lost, passed, breaches,
         operator, reviewer, accepted) = row  # fmt: skip
        return cls(
            run_id, created, drill, scenario, stack, rev, rto, rto_obj, rpo, rpo_obj, acked, lost, bool(passed),
            tuple(json.loads(breaches)), operator, reviewer, None if accepted is None else bool(accepted),
        )  # fmt: skip


class History:
    """``History()`` is reports/history.sqlite; ``History("postgresql://...")`` a PostgreSQL database."""

    def __init__(self, url: str | Path | None = None) -> None:
        self.url = str(url) if url is not None else str(DEFAULT_HISTORY)
        self.postgres = self.url.startswith(("postgresql://", "postgres://"))
        self._execute(SCHEMA)
        self._execute(DRILL_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        try:
            if self.postgres:
                with psycopg.connect(self.url, connect_timeout=5) as pg:
                    yield pg
            else:
                path = Path(self.url.removeprefix("sqlite:///"))
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(path, timeout=10)) as lite, lite:
                    yield lite
        except (sqlite3.Error, psycopg.Error) as exc:
            where = self.url.split("@")[-1]  # never print a password
            raise HistoryError(
                f"history at {where} failed: {type(exc).__name__}: {exc}",
                "check --history-url (postgresql://USER:PASSWORD@HOST:PORT/DB) or that reports/ is writable",
            ) from exc

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            cursor = conn.execute(self._sql(sql), params)
            return list(cursor.fetchall()) if cursor.description else []

    def add(self, record: RunRecord) -> None:
        marks = ", ".join("?" * len(record.row()))
        self._execute(f"INSERT INTO load_runs ({COLUMNS}) VALUES ({marks})", record.row())

    def current_epoch(self, key: tuple[str, str, str, str]) -> int:
        rows = self._execute(
            "SELECT max(epoch) FROM load_runs WHERE stack = ? AND profile_hash = ? AND mode = ? AND fingerprint = ?",
            key,
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def baseline(self, key: tuple[str, str, str, str], n: int) -> list[RunRecord]:
        """The last ``n`` accepted runs of the current epoch for this key, newest first."""
        rows = self._execute(
            f"SELECT {COLUMNS} FROM load_runs WHERE stack = ? AND profile_hash = ? AND mode = ? AND fingerprint = ?"
            " AND accepted = 1 AND epoch = ? ORDER BY created_at DESC LIMIT ?",
            (*key, self.current_epoch(key), n),
        )
        return [RunRecord.from_row(r) for r in rows]

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._execute(f"SELECT {COLUMNS} FROM load_runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [RunRecord.from_row(r) for r in rows]

    def add_drill(self, record: DrillRecord) -> None:
        marks = ", ".join("?" * len(record.row()))
        self._execute(f"INSERT INTO drill_runs ({DRILL_COLUMNS}) VALUES ({marks})", record.row())

    def drills(self, drill: str, stack: str, limit: int = 20) -> list[DrillRecord]:
        """The last ``limit`` runs of one drill on one stack, oldest first (quarter over quarter)."""
        rows = self._execute(
            f"SELECT {DRILL_COLUMNS} FROM drill_runs WHERE drill = ? AND stack = ?"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (drill, stack, limit),
        )
        return [DrillRecord.from_row(r) for r in reversed(rows)]
