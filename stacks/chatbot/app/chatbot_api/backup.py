"""Backup and restore of the chat database (design doc 002, section 10): doc 002's backup.sh
for the SQLite default, run in the API's image.

    python3 -m chatbot_api.backup backup   [--dir /backups] [--keep 7]   # online, the API running
    python3 -m chatbot_api.backup restore  [FILE] [--dir /backups]       # the API stopped
    python3 -m chatbot_api.backup check    [FILE]                        # integrity of the live file

``backup`` is SQLite's online backup (``Connection.backup``, what ``sqlite3 .backup`` does): one
consistent snapshot of every table while the API keeps writing, checked (integrity_check) before
it is renamed into place as ``chatbot-<UTC time>.db``; the oldest beyond ``--keep`` go (doc 002
keeps 7 days). ``restore`` puts the latest backup (or FILE) in place of the database: copied next
to it, synced, renamed over it, its WAL and shared-memory files removed, so the API's next start
opens exactly the backup. Each command prints one JSON line: what it did and the row counts.
The PostgreSQL profile (stack-postgres.toml) backs up with pg_dump in the postgres container
instead: stacks/chatbot/postgres/backup.sh, the same commands and JSON lines (the API's image has
no PostgreSQL client programs).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

TABLES = ("conversations", "messages")
PREFIX, SUFFIX = "chatbot-", ".db"


class BackupError(Exception):
    pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def counts(path: Path) -> dict[str, int]:
    """Rows per table of a database file, after an integrity check; BackupError when it is damaged."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise BackupError(f"{path} fails integrity_check: {result}")
            found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES if t in found}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: {type(exc).__name__}: {exc}") from exc


def backups(directory: Path) -> list[Path]:
    """The backups in ``directory``, oldest first (the names sort by time)."""
    return sorted(p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def backup(database: Path, directory: Path, keep: int) -> dict[str, Any]:
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{int(started % 1 * 1e6):06d}Z"
    target = directory / f"{PREFIX}{stamp}{SUFFIX}"
    partial = target.with_name(target.name + ".partial")
    source = sqlite3.connect(database, timeout=5)
    try:
        dest = sqlite3.connect(partial)
        try:
            source.backup(dest)  # every page in one step: a single consistent snapshot
        finally:
            dest.close()
    finally:
        source.close()
    rows = counts(partial)
    missing = [t for t in TABLES if t not in rows]
    if missing:
        partial.unlink()
        raise BackupError(f"the backup of {database} has no table {', '.join(missing)}")
    _fsync(partial)
    partial.rename(target)
    _fsync(directory)
    removed = [p.name for p in backups(directory)[:-keep]]
    for name in removed:
        (directory / name).unlink()
    return {"file": str(target), "started": started, "finished": time.time(), "tables": rows, "removed": removed}


def restore(database: Path, directory: Path, file: Path | None) -> dict[str, Any]:
    chosen = file or next(iter(reversed(backups(directory))), None)
    if chosen is None:
        raise BackupError(f"no backup in {directory}")
    rows = counts(chosen)
    staging = database.with_name(database.name + ".restoring")
    staging.unlink(missing_ok=True)
    source, dest = sqlite3.connect(f"file:{chosen}?mode=ro", uri=True), sqlite3.connect(staging)
    try:
        source.backup(dest)
    finally:
        source.close()
        dest.close()
    _fsync(staging)
    # The old file's WAL must not be replayed onto the restored one.
    for extra in ("-wal", "-shm"):
        database.with_name(database.name + extra).unlink(missing_ok=True)
    staging.replace(database)
    _fsync(database.parent)
    return {"file": str(chosen), "database": str(database), "tables": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m chatbot_api.backup")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="online backup of the database into --dir")
    b.add_argument("--dir", type=Path, default=Path(os.environ.get("BACKUP_DIR", "/backups")))
    b.add_argument("--keep", type=int, default=int(os.environ.get("BACKUP_KEEP", "7")))
    r = sub.add_parser("restore", help="replace the database with the latest backup (or FILE); the API stopped")
    r.add_argument("file", type=Path, nargs="?")
    r.add_argument("--dir", type=Path, default=Path(os.environ.get("BACKUP_DIR", "/backups")))
    c = sub.add_parser("check", help="integrity check of the database (or FILE)")
    c.add_argument("file", type=Path, nargs="?")
    args = parser.parse_args(argv)
    database = Path(os.environ.get("DATABASE_PATH") or "/data/chatbot.db")
    try:
        if args.command == "backup":
            if args.keep < 1:
                raise BackupError(f"--keep must be at least 1, not {args.keep}")
            result = backup(database, args.dir, args.keep)
        elif args.command == "restore":
            result = restore(database, args.dir, args.file)
        else:
            result = {"file": str(args.file or database), "tables": counts(args.file or database)}
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(json.dumps({"error": f"{args.command}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
