"""Storage of conversations and messages, two backends behind one interface (``open_database``
picks by the settings): SQLite by default (``Database``), PostgreSQL when DATABASE_URL is set
(``PostgresDatabase``, doc 002's PostgreSQL profile). Same schema, ids, ordering and errors.

SQLite: one connection per thread, WAL with synchronous=FULL, so an acknowledged message is on
disk before the answer leaves (a crash of the process or the host loses none). Two uvicorn workers
share the file: WAL lets readers run beside the one writer, writers take the write lock up front
(BEGIN IMMEDIATE) and wait for each other up to busy_timeout.

PostgreSQL: a connection pool per worker (psycopg), one transaction per call, committed before
the answer leaves (synchronous_commit on: durable once acknowledged).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("chatbot_api.db")
BUSY_TIMEOUT_MS = 5000
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        title TEXT,
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        model TEXT,
        client_id TEXT,
        created_at REAL NOT NULL,
        UNIQUE (conversation_id, client_id))""",
    "CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages(conversation_id, id)",
)


class DatabaseUnavailable(Exception):
    """The database cannot serve this request (file missing, locked too long, disk full)."""


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    role: str
    content: str
    model: str | None
    client_id: str | None
    created_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "model": self.model,
            "client_id": self.client_id,
            "created_at": self.created_at,
        }


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _conversation(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "created_at": row["created_at"]}


def _message(row: sqlite3.Row) -> Message:
    return Message(*(row[k] for k in ("id", "conversation_id", "role", "content", "model", "client_id", "created_at")))


class Database:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def open(self) -> None:
        """Create the schema (idempotent: every worker runs it at start)."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with self.write() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        log.info("database %s ready (%s)", self.path, self.pragmas())

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            # journal_mode is stored in the file; switching needs the lock, so retry while the
            # other worker holds it at start.
            for attempt in range(50):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.05)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.DatabaseError as exc:
            self._drop_connection()
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that holds the write lock from its start; committed on success."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            self._drop_connection()
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._drop_connection()
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict(str(exc)) from exc
            if isinstance(exc, sqlite3.DatabaseError):
                self._drop_connection()
                raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    # -- health ---------------------------------------------------------------------------------
    def pragmas(self) -> dict[str, Any]:
        with self.read() as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = {0: "off", 1: "normal", 2: "full", 3: "extra"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
        return {"journal_mode": mode, "synchronous": sync}

    def ping(self) -> dict[str, Any]:
        """A real read of the schema plus the durability settings in force."""
        with self.read() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"conversations", "messages"} - tables
        if missing:
            raise DatabaseUnavailable(f"schema incomplete: {', '.join(sorted(missing))} missing")
        return self.pragmas()

    # -- conversations --------------------------------------------------------------------------
    def create_conversation(
        self, title: str | None, conversation_id: str | None = None, first_message: str | None = None
    ) -> tuple[dict[str, Any], Message | None]:
        """A new conversation, with its first user message in the same transaction if given."""
        cid = conversation_id or uuid.uuid4().hex
        message = None
        with self.write() as conn:
            try:
                conn.execute(
                    "INSERT INTO conversations (id, title, created_at) VALUES (?, ?, ?)", (cid, title, time.time())
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"conversation {cid} exists") from None
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (cid,)).fetchone()
            if first_message is not None:
                message = self._insert_message(conn, cid, "user", first_message, None, None)
        return _conversation(row), message

    def get_conversation(self, cid: str) -> dict[str, Any]:
        with self.read() as conn:
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise NotFound(f"conversation {cid} not found")
            count = conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (cid,)).fetchone()[0]
        return {**_conversation(row), "messages": count}

    def list_conversations(self, limit: int, offset: int, q: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Newest first; ``q``: only titles containing it."""
        where, args = ("WHERE title LIKE ? ESCAPE '\\'", [_like(q)]) if q else ("", [])
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM conversations {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = conn.execute(f"SELECT COUNT(*) FROM conversations {where}", args).fetchone()[0]
        return [_conversation(r) for r in rows], total

    def count_conversations(self) -> int:
        with self.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])

    def count_active_conversations(self, since: float) -> int:
        """Conversations with a message stored at or after ``since`` (epoch seconds)."""
        with self.read() as conn:
            sql = "SELECT COUNT(DISTINCT conversation_id) FROM messages WHERE created_at >= ?"
            return int(conn.execute(sql, (since,)).fetchone()[0])

    def delete_conversation(self, cid: str) -> None:
        with self.write() as conn:
            if conn.execute("DELETE FROM conversations WHERE id = ?", (cid,)).rowcount == 0:
                raise NotFound(f"conversation {cid} not found")

    def delete_message(self, message_id: int) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    # -- messages -------------------------------------------------------------------------------
    def add_message(
        self, cid: str, role: str, content: str, model: str | None = None, client_id: str | None = None
    ) -> tuple[Message, bool]:
        """Store a message; returns (message, created). A repeated client_id returns the stored
        message instead of a duplicate (a client retrying after a lost answer)."""
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone() is None:
                raise NotFound(f"conversation {cid} not found")
            if client_id is not None:
                row = conn.execute(
                    "SELECT * FROM messages WHERE conversation_id = ? AND client_id = ?", (cid, client_id)
                ).fetchone()
                if row is not None:
                    return _message(row), False
            return self._insert_message(conn, cid, role, content, model, client_id), True

    @staticmethod
    def _insert_message(
        conn: sqlite3.Connection, cid: str, role: str, content: str, model: str | None, client_id: str | None
    ) -> Message:
        cur = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, model, client_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cid, role, content, model, client_id, time.time()),
        )
        return _message(conn.execute("SELECT * FROM messages WHERE id = ?", (cur.lastrowid,)).fetchone())

    def search_messages(self, q: str, limit: int) -> list[Message]:
        """Messages of every conversation whose content contains ``q``, oldest first."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE content LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", (_like(q), limit)
            ).fetchall()
        return [_message(r) for r in rows]

    def list_messages(self, cid: str, after_id: int, limit: int) -> list[Message]:
        with self.read() as conn:
            if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone() is None:
                raise NotFound(f"conversation {cid} not found")
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? AND id > ? ORDER BY id LIMIT ?",
                (cid, after_id, limit),
            ).fetchall()
        return [_message(r) for r in rows]

    def history(self, cid: str, before_id: int, count: int) -> list[Message]:
        """The last ``count`` messages before ``before_id``, oldest first: the LLM's context."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (cid, before_id, count),
            ).fetchall()
        return [_message(r) for r in reversed(rows)]


# -- PostgreSQL ---------------------------------------------------------------------------------
# The SQLite schema in PostgreSQL types: ids from an identity (never reused, as AUTOINCREMENT),
# times as epoch seconds in double precision (SQLite's REAL).
PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        title TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS messages (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        model TEXT,
        client_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (conversation_id, client_id))""",
    "CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages(conversation_id, id)",
)
SCHEMA_LOCK = 0x63686174  # an advisory lock: two workers creating the schema at once would collide
POOL_SIZE = 8  # per uvicorn worker
POOL_TIMEOUT_S = 5.0  # as SQLite's busy_timeout: a request waits this long for a connection
MESSAGE_COLUMNS = "id, conversation_id, role, content, model, client_id, created_at"


def _pg_message(row: dict[str, Any]) -> Message:
    return Message(*(row[k] for k in ("id", "conversation_id", "role", "content", "model", "client_id", "created_at")))


class PostgresDatabase:
    """The same interface as ``Database`` on a PostgreSQL server (``url``: postgresql://...).
    Title and content search are case-insensitive (ILIKE), as SQLite's LIKE is for ASCII."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=False, timeout=POOL_TIMEOUT_S,
            kwargs={"row_factory": dict_row, "connect_timeout": 5},
        )  # fmt: skip

    def open(self) -> None:
        """Open the pool and create the schema (idempotent: every worker runs it at start)."""
        self.pool.open(wait=True, timeout=30)
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in PG_SCHEMA:
                conn.execute(statement)
        info = conninfo_to_dict(self.url)  # never log the URL itself: it holds the password
        log.info("database %s on %s ready (%s)", info.get("dbname"), info.get("host"), self.ping())

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction: committed when the block ends, rolled back on an error."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except pg_errors.UniqueViolation as exc:
            raise Conflict(str(exc).strip()) from exc
        except pg_errors.ForeignKeyViolation as exc:  # the conversation was deleted meanwhile
            raise NotFound(str(exc).strip()) from exc
        except psycopg.Error as exc:  # unreachable, shut down, out of connections, disk full
            raise DatabaseUnavailable(f"{type(exc).__name__}: {str(exc).strip()}") from exc

    # -- health ---------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """A real read of the schema plus the durability settings and TLS of this connection."""
        with self.transaction() as conn:
            tables = {
                r["table_name"]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            }
            row = conn.execute(
                "SELECT current_setting('synchronous_commit') AS synchronous_commit,"
                " current_setting('server_version') AS server_version,"
                " COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl"
            ).fetchone()
        missing = {"conversations", "messages"} - tables
        if missing:
            raise DatabaseUnavailable(f"schema incomplete: {', '.join(sorted(missing))} missing")
        assert row is not None
        return {"engine": "postgresql", **row}

    # -- conversations --------------------------------------------------------------------------
    def create_conversation(
        self, title: str | None, conversation_id: str | None = None, first_message: str | None = None
    ) -> tuple[dict[str, Any], Message | None]:
        cid = conversation_id or uuid.uuid4().hex
        message = None
        try:
            with self.transaction() as conn:
                row = conn.execute(
                    "INSERT INTO conversations (id, title, created_at) VALUES (%s, %s, %s)"
                    " RETURNING id, title, created_at",
                    (cid, title, time.time()),
                ).fetchone()
                if first_message is not None:
                    message = self._insert_message(conn, cid, "user", first_message, None, None)
        except Conflict:
            raise Conflict(f"conversation {cid} exists") from None
        assert row is not None
        return dict(row), message

    def get_conversation(self, cid: str) -> dict[str, Any]:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT id, title, created_at, (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id) AS n"
                " FROM conversations c WHERE id = %s",
                (cid,),
            ).fetchone()
        if row is None:
            raise NotFound(f"conversation {cid} not found")
        return {"id": row["id"], "title": row["title"], "created_at": row["created_at"], "messages": row["n"]}

    def list_conversations(self, limit: int, offset: int, q: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE title ILIKE %s ESCAPE '\\'", [_like(q)]) if q else ("", [])
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, title, created_at FROM conversations {where}"
                " ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
                (*args, limit, offset),
            ).fetchall()
            total = conn.execute(f"SELECT COUNT(*) AS n FROM conversations {where}", args).fetchone()
        assert total is not None
        return [dict(r) for r in rows], int(total["n"])

    def count_conversations(self) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM conversations").fetchone()
        assert row is not None
        return int(row["n"])

    def count_active_conversations(self, since: float) -> int:
        """Conversations with a message stored at or after ``since`` (epoch seconds)."""
        with self.transaction() as conn:
            sql = "SELECT COUNT(DISTINCT conversation_id) AS n FROM messages WHERE created_at >= %s"
            row = conn.execute(sql, (since,)).fetchone()
        assert row is not None
        return int(row["n"])

    def delete_conversation(self, cid: str) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM conversations WHERE id = %s", (cid,)).rowcount == 0:
                raise NotFound(f"conversation {cid} not found")

    def delete_message(self, message_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM messages WHERE id = %s", (message_id,))

    # -- messages -------------------------------------------------------------------------------
    def add_message(
        self, cid: str, role: str, content: str, model: str | None = None, client_id: str | None = None
    ) -> tuple[Message, bool]:
        """As ``Database.add_message``; a concurrent retry with the same client_id is stored once
        (ON CONFLICT), the other gets the stored message."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM conversations WHERE id = %s", (cid,)).fetchone() is None:
                raise NotFound(f"conversation {cid} not found")
            if client_id is None:
                return self._insert_message(conn, cid, role, content, model, None), True
            row = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, model, client_id, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (conversation_id, client_id) DO NOTHING"
                f" RETURNING {MESSAGE_COLUMNS}",
                (cid, role, content, model, client_id, time.time()),
            ).fetchone()
            if row is not None:
                return _pg_message(row), True
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s AND client_id = %s",
                (cid, client_id),
            ).fetchone()
        assert row is not None
        return _pg_message(row), False

    @staticmethod
    def _insert_message(
        conn: psycopg.Connection[Any], cid: str, role: str, content: str, model: str | None, client_id: str | None
    ) -> Message:
        row = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, model, client_id, created_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {MESSAGE_COLUMNS}",
            (cid, role, content, model, client_id, time.time()),
        ).fetchone()
        assert row is not None
        return _pg_message(row)

    def search_messages(self, q: str, limit: int) -> list[Message]:
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE content ILIKE %s ESCAPE '\\' ORDER BY id LIMIT %s",
                (_like(q), limit),
            ).fetchall()
        return [_pg_message(r) for r in rows]

    def list_messages(self, cid: str, after_id: int, limit: int) -> list[Message]:
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM conversations WHERE id = %s", (cid,)).fetchone() is None:
                raise NotFound(f"conversation {cid} not found")
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s AND id > %s ORDER BY id LIMIT %s",
                (cid, after_id, limit),
            ).fetchall()
        return [_pg_message(r) for r in rows]

    def history(self, cid: str, before_id: int, count: int) -> list[Message]:
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s AND id < %s"
                " ORDER BY id DESC LIMIT %s",
                (cid, before_id, count),
            ).fetchall()
        return [_pg_message(r) for r in reversed(rows)]


def open_database(settings: Settings) -> Database | PostgresDatabase:
    """PostgreSQL when the settings name a DATABASE_URL, else the SQLite file (the default)."""
    return PostgresDatabase(settings.database_url) if settings.database_url else Database(settings.database_path)
