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
    accepted INTEGER,
    signed_off_at TEXT,
    sign_off_note TEXT,
    breach_accepted TEXT
)"""
# Sign-off columns added after the first drill histories were written: added to those on open.
SIGN_OFF_COLUMNS = {"signed_off_at": "TEXT", "sign_off_note": "TEXT", "breach_accepted": "TEXT"}
DRILL_COLUMNS = (
    "run_id, created_at, drill, scenario, stack, git_rev, rto_s, rto_objective_s, rpo_s, rpo_objective_s,"
    " acknowledged, lost, passed, breaches, operator, reviewer, accepted, signed_off_at, sign_off_note, breach_accepted"
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
    verdict, and the sign-off fields (None until ``stackcheck sign-off`` fills them in once:
    reviewer, accepted, when, a note, and for a breached drill accepted anyway the reason)."""

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
    signed_off_at: str | None = None
    note: str | None = None
    breach_accepted: str | None = None  # why a breached drill was accepted all the same

    @property
    def signed_off(self) -> bool:
        return self.reviewer is not None

    def row(self) -> tuple[Any, ...]:
        return (
            self.run_id, self.created_at, self.drill, self.scenario, self.stack, self.git_rev, self.rto_s,
            self.rto_objective_s, self.rpo_s, self.rpo_objective_s, self.acknowledged, self.lost, int(self.passed),
            json.dumps(list(self.breaches)), self.operator, self.reviewer,
            None if self.accepted is None else int(self.accepted), self.signed_off_at, self.note,
            self.breach_accepted,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> DrillRecord:
        (run_id, created, drill, scenario, stack, rev, rto, rto_obj, rpo, rpo_obj, acked, lost, passed, breaches,
         operator, reviewer, accepted, signed_at, note, breach_accepted) = row  # fmt: skip
        return cls(
            run_id, created, drill, scenario, stack, rev, rto, rto_obj, rpo, rpo_obj, acked, lost, bool(passed),
            tuple(json.loads(breaches)), operator, reviewer, None if accepted is None else bool(accepted),
            signed_at, note, breach_accepted,
        )  # fmt: skip


@dataclass(frozen=True)
class SignOff:
    """A reviewer's verdict on one drill run. Accepting a run that breached its objectives takes
    ``breach_accepted``, the reason: a breach is never signed off as met by a plain accept."""

    reviewer: str
    accepted: bool
    at: str  # wall clock, as the records' dates
    note: str | None = None
    breach_accepted: str | None = None
    operator: str | None = None  # fills in a record run without --operator

    def problem(self, record: DrillRecord) -> tuple[str, str] | None:
        """Why this sign-off may not go onto ``record`` (problem, fix), or None."""
        run = f"drill run {record.run_id}"
        if record.signed_off:
            verdict = "accepted" if record.accepted else "rejected"
            return (
                f"{run} was already signed off: {verdict} by {record.reviewer} at {record.signed_off_at}",
                "a sign-off is final; run the drill again for a new record to sign off",
            )
        if not self.reviewer.strip():
            return f"no reviewer for {run}", "name the reviewer: --reviewer NAME"
        if self.accepted and not record.passed and not self.breach_accepted:
            breaches = "; ".join(record.breaches) or "verdict FAIL"
            return (
                f"{run} breached its objectives ({breaches}): a plain accept is refused",
                "--reject it, or accept the breach knowingly with --accept-breach 'REASON'",
            )
        if self.breach_accepted is not None and record.passed:
            return f"{run} met its objectives: there is no breach to accept", "sign it off with --accept"
        if self.operator and record.operator and self.operator != record.operator:
            return (
                f"{run} was run by operator {record.operator}, not {self.operator}",
                "leave out --operator: it only fills in a record run without one",
            )
        return None


class History:
    """``History()`` is reports/history.sqlite; ``History("postgresql://...")`` a PostgreSQL database."""

    def __init__(self, url: str | Path | None = None) -> None:
        self.url = str(url) if url is not None else str(DEFAULT_HISTORY)
        self.postgres = self.url.startswith(("postgresql://", "postgres://"))
        self._execute(SCHEMA)
        self._execute(DRILL_SCHEMA)
        self._add_sign_off_columns()

    def _add_sign_off_columns(self) -> None:
        with self._connect() as conn:
            have = {d[0] for d in conn.execute("SELECT * FROM drill_runs WHERE 1 = 0").description}
            for name, kind in SIGN_OFF_COLUMNS.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE drill_runs ADD COLUMN {name} {kind}")

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

    def drill_run(self, run_id: str) -> DrillRecord | None:
        rows = self._execute(f"SELECT {DRILL_COLUMNS} FROM drill_runs WHERE run_id = ?", (run_id,))
        return DrillRecord.from_row(rows[0]) if rows else None

    def sign_off(self, run_id: str, sign: SignOff) -> DrillRecord:
        """Fill in the sign-off fields of a stored drill run, once; returns the updated record."""
        record = self.drill_run(run_id)
        if record is None:
            recent = self._execute("SELECT run_id FROM drill_runs ORDER BY created_at DESC LIMIT 3")
            where = self.url.split("@")[-1]
            raise HistoryError(
                f"no drill run {run_id!r} in the history at {where}",
                "pass the run id `stackcheck drill` printed (its record's folder name)"
                + (f", e.g. {', '.join(r[0] for r in recent)}" if recent else "")
                + ", and the --history-url the drill used",
            )
        problem = sign.problem(record)
        if problem is not None:
            raise HistoryError(*problem)
        with self._connect() as conn:
            # Only an unsigned row: a sign-off racing this one leaves it untouched (rowcount 0).
            changed = conn.execute(
                self._sql(
                    "UPDATE drill_runs SET reviewer = ?, accepted = ?, signed_off_at = ?, sign_off_note = ?,"
                    " breach_accepted = ?, operator = COALESCE(operator, ?) WHERE run_id = ? AND reviewer IS NULL"
                ),
                (sign.reviewer, int(sign.accepted), sign.at, sign.note, sign.breach_accepted, sign.operator, run_id),
            ).rowcount
        updated = self.drill_run(run_id)
        assert updated is not None
        if changed != 1:
            raced = sign.problem(updated)
            raise HistoryError(*(raced or (f"drill run {run_id} was not updated", "run the sign-off again")))
        return updated

    def drills(self, drill: str, stack: str, limit: int = 20) -> list[DrillRecord]:
        """The last ``limit`` runs of one drill on one stack, oldest first (quarter over quarter)."""
        rows = self._execute(
            f"SELECT {DRILL_COLUMNS} FROM drill_runs WHERE drill = ? AND stack = ?"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (drill, stack, limit),
        )
        return [DrillRecord.from_row(r) for r in reversed(rows)]
