"""The chatbot's backup script (chatbot_api.backup, doc 002 section 10) on real SQLite files:
an online backup while another connection writes is one consistent snapshot; restore puts the
latest (or the named) backup in place and drops the old WAL; damaged or incomplete files are
refused with the reason; retention keeps the newest."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from chatbot_api import backup
from chatbot_api.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(str(tmp_path / "data" / "chatbot.db"))
    database.open()
    return database


def write(db: Database, first: int, count: int) -> None:
    for n in range(first, first + count):
        db.create_conversation(f"t{n}", f"c{n}", f"m{n}")


def ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT conversation_id FROM messages")}


def test_backup_then_restore_brings_back_exactly_the_snapshot(db: Database, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    write(db, 0, 20)
    made = backup.backup(Path(db.path), backups, keep=7)
    assert made["tables"] == {"conversations": 20, "messages": 20}
    write(db, 20, 5)  # after the backup: lost by the restore
    restored = backup.restore(Path(db.path), backups, None)
    assert restored["file"] == made["file"]
    assert not Path(db.path + "-wal").exists(), "the old WAL must not be replayed onto the restored file"
    assert ids(Path(db.path)) == {f"c{n}" for n in range(20)}


def test_an_online_backup_under_writes_is_a_consistent_prefix(db: Database, tmp_path: Path) -> None:
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            db.create_conversation(None, f"c{n}", f"m{n}")
            written.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        made = backup.backup(Path(db.path), tmp_path, keep=7)
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    found = ids(Path(made["file"]))
    count = len(found)
    assert found == {f"c{n}" for n in range(count)}, "a snapshot is a prefix of the writes"
    assert 0 < count < len(written)
    assert made["tables"] == {"conversations": count, "messages": count}


def test_restore_takes_the_latest_unless_a_file_is_named(db: Database, tmp_path: Path) -> None:
    write(db, 0, 3)
    older = backup.backup(Path(db.path), tmp_path, keep=7)
    write(db, 3, 3)
    newer = backup.backup(Path(db.path), tmp_path, keep=7)
    assert [p.name for p in backup.backups(tmp_path)] == [Path(older["file"]).name, Path(newer["file"]).name]
    assert backup.restore(Path(db.path), tmp_path, None)["tables"]["messages"] == 6
    assert backup.restore(Path(db.path), tmp_path, Path(older["file"]))["tables"]["messages"] == 3


def test_retention_keeps_the_newest(db: Database, tmp_path: Path) -> None:
    made = [backup.backup(Path(db.path), tmp_path, keep=2)["file"] for _ in range(3)]
    assert [str(p) for p in backup.backups(tmp_path)] == made[1:]


def test_damaged_or_incomplete_files_are_refused_with_the_reason(db: Database, tmp_path: Path) -> None:
    write(db, 0, 3)
    made = Path(backup.backup(Path(db.path), tmp_path, keep=7)["file"])
    damaged = tmp_path / "chatbot-99999999T000000000000Z.db"
    damaged.write_bytes(b"\x00garbage" * 4096)
    with pytest.raises(backup.BackupError, match="file is not a database"):
        backup.restore(Path(db.path), tmp_path, None)  # the latest is damaged: refused, nothing replaced
    assert ids(Path(db.path)) == {"c0", "c1", "c2"}
    damaged.unlink()
    with sqlite3.connect(made) as conn:
        conn.execute("DROP TABLE messages")
    assert backup.counts(made) == {"conversations": 3}
    with pytest.raises(backup.BackupError, match="no backup in"):
        backup.restore(Path(db.path), tmp_path / "empty", None)


def test_the_command_prints_one_json_line_and_fails_clearly(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_PATH", db.path)
    write(db, 0, 2)
    assert backup.main(["backup", "--dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["tables"] == {"conversations": 2, "messages": 2}
    assert backup.main(["check"]) == 0
    capsys.readouterr()
    for damaged in (Path(db.path), Path(db.path + "-wal")):  # garbled blocks: the file and its WAL
        damaged.write_bytes(b"\xff" * 8192)
    assert backup.main(["check"]) == 1
    assert "check: " in json.loads(capsys.readouterr().out)["error"]
    assert backup.main(["backup", "--dir", str(tmp_path), "--keep", "0"]) == 1
