"""SQLite storage: one connection per thread, WAL with synchronous=FULL, so an acknowledged
message is on disk before the answer leaves (a crash of the process or the host loses none).

Two uvicorn workers share the file: WAL lets readers run beside the one writer, writers take the
write lock up front (BEGIN IMMEDIATE) and wait for each other up to busy_timeout.
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
from typing import Any

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
