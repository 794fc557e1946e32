"""The chatbot's PostgreSQL profile (stacks/chatbot/stack-postgres.toml: stack.toml extended with a
postgres service) on real containers: messages sent through the edge are rows in PostgreSQL (read
back from the server, not the API), over TLS as the application's own role; the PostgreSQL
compliance rules run and pass, and pg-no-trust fails on a variant with trust in pg_hba.conf;
`stackcheck drill backup-restore` (pg_dump to the backups volume, the server lost, the latest dump
restored into a fresh stack with psql) loses exactly the writes after the latest backup; a backup
that skips the messages table and a restore from the older dump are each caught with the ids.

Run under the engine lock (one boot for the read-only tests, one per drill):
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_chatbot_postgres.py
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.scenarios import load_hook
from stackcheck.compliance import runner
from stackcheck.compliance.model import Outcome, Result
from stackcheck.stack import Stack
from stackcheck.stackfile import StackSpec

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROFILE = Path(__file__).resolve().parents[2] / "stacks" / "chatbot" / "stack-postgres.toml"
SPEC = stackfile.load(PROFILE)
DRILL = SPEC.chaos.scenarios["backup-restore"]
PG_RULES = ("tls-postgres", "pg-scram", "pg-no-trust", "pg-ssl", "pg-app-not-superuser", "pg-stat-statements")
# A backup as doc 002's script would be with one table's data forgotten: the dump has the schema
# of messages but none of its rows (and none of the script's own checks).
SKIPS_MESSAGES = (
    "bash", "-c",
    'f="/backups/chatbot-$(date -u +%Y%m%dT%H%M%S%6NZ).sql.gz"; pg_dump -h /tmp -U postgres --clean --if-exists'
    ' --exclude-table-data=messages "$POSTGRES_DB" | gzip > "$f" && printf \'{"file": "%s"}\\n\' "$f"',
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _built(own_images: Callable[[StackSpec], None]) -> None:
    own_images(SPEC)  # the profile's API image is its own (stackcheck/chatbot-pg-api), not the base's


@pytest.fixture(scope="module")
def chatbot_pg() -> Iterator[Stack]:
    with Stack(SPEC) as stack:
        print(f"\nchatbot-pg booted in {stack.boot_seconds:.1f}s")
        yield stack


def test_messages_are_rows_in_postgresql(chatbot_pg: Stack) -> None:
    with chatbot_pg.http() as client:
        health = client.get("/api/v1/health").json()
        created = client.post(
            "/api/v1/conversations", json={"title": "pg", "message": {"content": "first", "reply": False}}
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        for text in ("second", "third"):
            posted = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": text, "reply": False})
            assert posted.status_code == 201, posted.text
        api_ids = [m["id"] for m in client.get(f"/api/v1/conversations/{cid}/messages").json()["items"]]
    assert health["database"] == "ok"
    details = health["checks"][0]["details"]
    assert (details["engine"], details["ssl"], details["synchronous_commit"]) == ("postgresql", True, "on")
    with chatbot_pg.postgres("postgres") as conn:  # the server itself, as the application's role
        rows = conn.execute(
            "SELECT id, content FROM messages WHERE conversation_id = %s ORDER BY id", (cid,)
        ).fetchall()
    assert [content for _, content in rows] == ["first", "second", "third"]
    assert [i for i, _ in rows] == api_ids


def test_the_api_connects_over_tls_as_its_own_role_and_keeps_no_sqlite_file(chatbot_pg: Stack) -> None:
    with chatbot_pg.postgres("postgres", superuser=True) as conn:
        sessions = conn.execute(
            "SELECT a.usename, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
            " WHERE a.datname = 'chatbot' AND a.usename = 'chatbot'"
        ).fetchall()
    assert sessions, "the API holds no connection to the chatbot database"
    assert {(user, ssl) for user, ssl, _ in sessions} == {("chatbot", True)}, sessions
    api = chatbot_pg.service("api").docker
    api.reload()
    own = [m["Destination"] for m in api.attrs["Mounts"] if m.get("Name", "").startswith(chatbot_pg.run_id)]
    assert own == [], "the API mounts none of the stack's volumes: its data is the server's"
    code, out = api.exec_run(["sh", "-c", "ls -A /data"])  # the image's own (anonymous) /data volume
    assert (code, out.decode().strip()) == (0, ""), "no SQLite file was made"


def postgres_results(stack: Stack) -> list[Result]:
    policy = runner.scoped_policy(stack.spec, None)
    assert not set(PG_RULES) & set(policy.disabled), "the profile must run the PostgreSQL rules"
    only = dataclasses.replace(policy, rules={k: v for k, v in policy.rules.items() if k in PG_RULES})
    ctx = runner.CheckContext(stack.target(), stack, only)
    return [result for rule in only.rules.values() for result in runner.evaluate(rule, ctx)]


def test_the_postgresql_rules_run_and_pass(chatbot_pg: Stack) -> None:
    results = postgres_results(chatbot_pg)
    print("\n" + runner.table(results))
    assert {r.rule.id for r in results} == set(PG_RULES)
    assert {(r.rule.id, r.outcome) for r in results} == {(rule, Outcome.PASS) for rule in PG_RULES}


def test_trust_in_the_profiles_pg_hba_fails_pg_no_trust() -> None:
    data = stackfile.read(PROFILE)
    data["services"]["postgres"]["env"]["PG_HBA_PREPEND"] = "host all all all trust"
    with Stack(stackfile.parse(data, PROFILE)) as stack:
        results = postgres_results(stack)
    print("\n" + runner.table(results))
    failed = {r.rule.id: r for r in results if r.outcome is not Outcome.PASS}
    assert set(failed) == {"pg-no-trust"}, runner.table(results)
    assert failed["pg-no-trust"].outcome is Outcome.FAIL
    assert "pg_hba.conf trusts without a password: line 1: host all all all" in failed["pg-no-trust"].evidence


# -- the backup-restore drill -----------------------------------------------------------------
def hooks() -> ModuleType:
    assert DRILL.hook is not None
    return sys.modules[load_hook(DRILL.hook).__module__]


def server_loss_drill(procedure: Any) -> ExperimentResult:
    assert DRILL.hook is not None
    with Stack(SPEC) as stack:
        result = load_hook(DRILL.hook)(stack, Experiment(DRILL.name, stack), DRILL, procedure)  # type: ignore[call-arg]
    print(f"\n{result.summary()}")
    return result


def ids_in(breach: str) -> list[tuple[int, int]]:
    """The id ranges a breach names: RUN-1..40, RUN-52 -> [(1, 40), (52, 52)]."""
    return [(int(a), int(b or a)) for a, b in re.findall(r"backup-restore-[0-9a-f]{8}-(\d+)(?:\.\.(\d+))?", breach)]


def test_stackcheck_drill_backup_restore_on_postgresql(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "stackcheck.cli",
        "drill",
        "backup-restore",
        "--stack",
        str(PROFILE),
        "--no-history",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    out = proc.stdout
    print(out[-6000:])
    assert proc.returncode == 0, f"{out[-3000:]}\n{proc.stderr[-2000:]}"
    assert "drill backup-restore: objectives met" in out
    assert "BREACH" not in out
    assert re.search(r"backup: bash /usr/local/lib/chatbot/backup.sh backup", out)
    assert re.search(r"backup /backups/chatbot-\d{8}T\d{12}Z\.sql\.gz in \d+\.\d+s: \{'conversations': [1-9]", out)
    assert re.search(r"all [1-9]\d* writes acknowledged before the latest backup began survived the restore: ok", out)
    assert re.search(r"all [1-9]\d* writes sent after the latest backup ended are lost: ok", out)
    assert re.search(r"the data volume chatbot-pg-[0-9a-f]{8}-pg-data is gone: ok", out)
    assert "the restored database has the latest backup's rows: ok" in out
    rto = float(re.search(r"RTO (\d+\.\d+)s", out).group(1))  # type: ignore[union-attr]
    assert rto > 1.0, "the RTO runs from the disaster to the restored data: a fresh stack boots in between"


def test_a_pg_dump_that_skips_the_messages_table_is_caught_with_the_ids() -> None:
    result = server_loss_drill(dataclasses.replace(hooks().POSTGRES, backup=SKIPS_MESSAGES))
    assert not result.passed
    breach = next(b for b in result.breaches if "survived the restore" in b)
    assert "missing: backup-restore-" in breach
    assert "the backup left data out, or an older file was restored" in breach
    assert ids_in(breach)[0][0] == 1, f"every message is gone, from the first write: {breach}"


def restore_oldest(files: Sequence[str]) -> tuple[str, ...]:
    return ("bash", "/usr/local/lib/chatbot/backup.sh", "restore", files[0])


def test_a_restore_from_the_older_dump_is_caught_with_the_ids() -> None:
    result = server_loss_drill(dataclasses.replace(hooks().POSTGRES, restore=restore_oldest))
    assert not result.passed
    assert any(b.startswith("the restored file is the latest backup") for b in result.breaches), result.breaches
    breach = next(b for b in result.breaches if "survived the restore" in b)
    spans = ids_in(breach)
    assert spans, breach
    assert spans[0][0] > 1, f"writes before the older dump survive; only those between the two are missing: {breach}"
