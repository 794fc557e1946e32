"""PostgreSQL access: pooled primary/replica connections, idempotent migrations, hard deadlines."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus as TxStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from .config import Settings, redact_url

log = logging.getLogger("promptcard_api.db")
T = TypeVar("T")

# Any constant works; it only has to be the same in every replica and worker.
MIGRATION_LOCK_KEY = 0x5C_0C_A2D
SEARCH_EXPR = (
    "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(description, '') || ' ' || coalesce(prompt, ''))"
)
# 003 design doc schema minus the users FK (no users table); coalesce() in the search index so a
# NULL description does not make the whole document NULL; cascades so deleting a card never
# fails on its history.
MIGRATIONS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS prompt_cards (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        title VARCHAR(255) NOT NULL,
        description TEXT,
        prompt TEXT NOT NULL,
        category VARCHAR(100),
        tags TEXT[],
        metadata JSONB,
        created_by UUID,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        version INTEGER DEFAULT 1,
        is_public BOOLEAN DEFAULT false)""",
    """CREATE TABLE IF NOT EXISTS test_cases (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        prompt_card_id UUID REFERENCES prompt_cards(id) ON DELETE CASCADE,
        name VARCHAR(255) NOT NULL,
        input JSONB NOT NULL,
        expected_output TEXT,
        assertions JSONB,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW())""",
    """CREATE TABLE IF NOT EXISTS execution_results (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        prompt_card_id UUID REFERENCES prompt_cards(id) ON DELETE CASCADE,
        test_case_id UUID REFERENCES test_cases(id) ON DELETE SET NULL,
        input JSONB,
        output TEXT,
        success BOOLEAN,
        execution_time INTEGER,
        metrics JSONB,
        executed_at TIMESTAMP WITH TIME ZONE DEFAULT NOW())""",
    "CREATE INDEX IF NOT EXISTS idx_prompt_cards_category ON prompt_cards(category)",
    "CREATE INDEX IF NOT EXISTS idx_prompt_cards_created_at ON prompt_cards(created_at)",
    "CREATE INDEX IF NOT EXISTS idx_prompt_cards_tags ON prompt_cards USING gin(tags)",
    "CREATE INDEX IF NOT EXISTS idx_test_cases_prompt_card_id ON test_cases(prompt_card_id)",
    "CREATE INDEX IF NOT EXISTS idx_execution_results_prompt_card_id ON execution_results(prompt_card_id)",
    f"CREATE INDEX IF NOT EXISTS idx_prompt_cards_search ON prompt_cards USING gin({SEARCH_EXPR})",
)


class DatabaseUnavailable(Exception):
    """Turned into a 503 by the app: the database cannot serve this request right now."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _ReplicaBehind(Exception):
    pass


class _Deadline:
    """Client-side query deadline. statement_timeout only helps when the server answers; on a
    black-holed link psycopg would block forever, so past the deadline we shut the socket down,
    the blocked call fails with OperationalError and the pool discards the connection."""

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._kill)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Under the lock so the timer can never hit a connection already handed back to the pool.
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _kill(self) -> None:
        with self._lock:
            if self._done:
                return
            try:
                fd = os.dup(self._conn.pgconn.socket)
            except Exception:  # already closed: nothing to unblock
                return
            log.warning("database call exceeded its deadline; dropping the connection")
            with socket.socket(fileno=fd) as sock, suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Database:
    PING_IF_IDLE_S = 1.0  # idle connections may have died with a server restart: ping first
    REPLICA_BACKOFF_S = 5.0  # after a replica failure, read from the primary for this long

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema_ready = threading.Event()
        self.query_deadline_s = settings.db_statement_timeout_ms / 1000 + 2.0
        self._stop = threading.Event()
        self._migrator: threading.Thread | None = None
        self._migrator_lock = threading.Lock()
        self._last_used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._replica_down_until = 0.0
        self.primary = self._make_pool(settings.database_url, "primary", settings.db_pool_timeout_s)
        self.replica = (
            self._make_pool(settings.database_replica_url, "replica", 1.0) if settings.database_replica_url else None
        )

    def _conn_kwargs(self) -> dict:
        s = self.settings
        return {
            "connect_timeout": s.db_connect_timeout_s,
            "options": f"-c statement_timeout={s.db_statement_timeout_ms}",
            "application_name": "promptcard-api",
            # Detect peers that vanished without a FIN (host crash, partition).
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }

    def _make_pool(self, url: str | None, name: str, timeout: float) -> ConnectionPool | None:
        if not url:
            return None
        log.info("database %s: %s", name, redact_url(url))
        return ConnectionPool(
            url,
            open=False,
            name=name,
            min_size=1,
            max_size=self.settings.db_pool_max_size,
            timeout=timeout,
            kwargs=self._conn_kwargs(),
            # Give up a failing reconnect loop quickly (its backoff doubles up to minutes):
            # the next request then starts a fresh attempt, so recovery after an outage is fast.
            reconnect_timeout=5.0,
            max_idle=300.0,
            num_workers=2,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        for pool in (self.primary, self.replica):
            if pool is not None:
                pool.open(wait=False)
        self.start_migrations()

    def close(self) -> None:
        self._stop.set()
        for pool in (self.primary, self.replica):
            if pool is not None:
                pool.close(timeout=2.0)

    def start_migrations(self) -> None:
        """Apply the schema in a background thread, retrying until it works: a database that is
        down at startup must not crash-loop the process."""
        if self.primary is None:
            log.error("DATABASE_URL is not set; every database request will get a 503")
            return
        with self._migrator_lock:
            if self._migrator is not None and self._migrator.is_alive():
                return
            self.schema_ready.clear()
            self._migrator = threading.Thread(target=self._migrate_loop, name="migrate", daemon=True)
            self._migrator.start()

    def _migrate_loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.migrate()
                self.schema_ready.set()
                log.info("database schema is ready")
                return
            except Exception as exc:  # keep retrying whatever the cause, with a clear line
                log.warning(
                    "database migrations failed (%s: %s); retrying in %.0fs",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc) else "",
                    delay,
                )
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def migrate(self) -> None:
        assert self.settings.database_url
        with psycopg.connect(
            self.settings.database_url,
            autocommit=True,
            **{**self._conn_kwargs(), "options": "-c statement_timeout=60000 -c lock_timeout=60000"},
        ) as conn:
            # Serialises migrations across all workers and replicas starting at once; the lock is
            # session-scoped, so a worker dying mid-migration releases it.
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                for statement in MIGRATIONS:
                    conn.execute(statement)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    # -- unit of work ----------------------------------------------------------------------------
    @contextmanager
    def _checkout(self, pool: ConnectionPool) -> Iterator[psycopg.Connection[Any]]:
        deadline = time.monotonic() + pool.timeout
        for _ in range(pool.max_size + 1):
            conn = pool.getconn(timeout=max(deadline - time.monotonic(), 0.01))
            if time.monotonic() - self._last_used.get(conn, 0.0) < self.PING_IF_IDLE_S:
                break
            try:
                with _Deadline(conn, min(2.0, self.query_deadline_s)):
                    conn.execute("SELECT 1")
                break
            except psycopg.Error:
                pool.putconn(conn)  # broken: the pool discards it and opens a replacement
        else:
            raise DatabaseUnavailable("no working database connection")
        try:
            yield conn
        except BaseException:
            # Roll back here rather than let the pool do it with a warning per failed request.
            if conn.pgconn.transaction_status in (TxStatus.INERROR, TxStatus.INTRANS):
                with suppress(psycopg.Error):
                    conn.rollback()
            raise
        finally:
            self._last_used[conn] = time.monotonic()
            pool.putconn(conn)

    def _run(
        self, pool: ConnectionPool | None, fn: Callable[[psycopg.Connection[Any]], T], *, want_lsn: bool = False
    ) -> tuple[T, str | None]:
        """Run fn in one transaction. A connection failure before COMMIT is retried once on a
        fresh connection (the server rolled the transaction back, so this is safe for writes
        too); a failure during COMMIT is ambiguous and never retried."""
        if pool is None:
            raise DatabaseUnavailable("database not configured")
        if not self.schema_ready.is_set():
            raise DatabaseUnavailable("database schema not ready yet")
        for attempt in (1, 2):
            committing = False
            try:
                with self._checkout(pool) as conn, _Deadline(conn, self.query_deadline_s):
                    result = fn(conn)
                    committing = True
                    conn.commit()
                    return result, (self._wal_lsn(conn) if want_lsn else None)
            except PoolTimeout:
                raise DatabaseUnavailable("timed out waiting for a database connection") from None
            except pg_errors.UndefinedTable:
                if pool is not self.primary:  # a replica that has not caught up yet
                    raise DatabaseUnavailable("replica schema missing") from None
                # The database was replaced under us (e.g. a fresh volume): re-apply the schema.
                self.start_migrations()
                raise DatabaseUnavailable("database schema missing; re-applying") from None
            except pg_errors.QueryCanceled:
                raise DatabaseUnavailable("database statement timeout") from None
            except pg_errors.ReadOnlySqlTransaction:
                raise DatabaseUnavailable("database is read-only") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if attempt == 1 and not committing:
                    continue
                log.warning("database error: %s", type(exc).__name__)
                raise DatabaseUnavailable("database connection failed") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _wal_lsn(conn: psycopg.Connection[Any]) -> str | None:
        # Best effort, after a successful commit: failing here must not fail the write.
        try:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            conn.commit()
            return row[0] if row else None
        except psycopg.Error:
            return None

    def write(self, fn: Callable[[psycopg.Connection[Any]], T]) -> tuple[T, str | None]:
        """Run fn in a transaction on the primary. Also returns the primary's WAL position after
        commit when a replica is configured, so later list reads can wait for the replica to
        have replayed this write."""
        return self._run(self.primary, fn, want_lsn=self.replica is not None)

    def read_primary(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self._run(self.primary, fn)[0]

    def read_replica(self, fn: Callable[[psycopg.Connection[Any]], T], min_lsn: str | None = None) -> T:
        """Read from the replica when it is configured, up and has replayed min_lsn; otherwise
        from the primary."""
        if self.replica is not None and time.monotonic() >= self._replica_down_until:

            def checked(conn: psycopg.Connection[Any]) -> T:
                if min_lsn:
                    row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (min_lsn,)).fetchone()
                    if not (row and row[0]):
                        raise _ReplicaBehind()
                return fn(conn)

            try:
                return self._run(self.replica, checked)[0]
            except _ReplicaBehind:
                pass
            except DatabaseUnavailable as exc:
                self._replica_down_until = time.monotonic() + self.REPLICA_BACKOFF_S
                log.warning(
                    "replica unavailable (%s); reading from the primary for %.0fs", exc.detail, self.REPLICA_BACKOFF_S
                )
        return self.read_primary(fn)

    # -- health ------------------------------------------------------------------------------
    def ping(self, which: str, timeout: float) -> str:
        """SELECT 1 through the pool (so pool exhaustion shows up as unhealthy), within ``timeout``.
        A pooled connection broken earlier (a cut link, a restarted server) is not the database
        being down: it goes back to the pool, which replaces it, and the next one is tried."""
        pool = self.primary if which == "primary" else self.replica
        if pool is None:
            raise DatabaseUnavailable("not configured")
        deadline = time.monotonic() + timeout
        for _ in range(pool.max_size + 1):
            conn = pool.getconn(timeout=max(deadline - time.monotonic(), 0.01))
            try:
                with _Deadline(conn, max(deadline - time.monotonic(), 0.01)):
                    conn.execute("SELECT 1")
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    conn.rollback()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if time.monotonic() >= deadline:
                    raise
                continue
            finally:
                pool.putconn(conn)
            self._last_used[conn] = time.monotonic()
            return "in recovery" if row and row[0] else "primary"
        raise DatabaseUnavailable("no working database connection")
