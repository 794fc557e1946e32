"""The chatbot's disaster-recovery drills (design doc 002 section 10: backup.sh, restore.sh and the
runbook's "Database Corruption" and "Complete Server Failure"), as [scenarios.NAME] hooks.

Both drills: the ledger writes conversations through the edge; the backup runs twice while it
writes (the stack's own script, `docker exec`: in the API, SQLite's online backup; on the
PostgreSQL profile, stack-postgres.toml, pg_dump in the postgres container; either way to the
backups volume); more writes; then the disaster, with the scenario's fault (the API killed -9,
left down) and the damage that data cannot say:

- corruption: every block of the database file and its WAL overwritten, restored in place as the
  runbook says (stop the application, restore the database from the latest backup, start it);
- server loss: the whole stack and its data volume destroyed, only the backup volume kept, and a
  fresh stack booted that mounts it; the latest backup restored into it the same way (SQLite: a
  job of the API's image puts the file in place; PostgreSQL: psql loads the dump into the fresh
  server, the API stopped).

Measured: RTO (the probe reads the drill's first write back through the edge: from the disaster
to the first of three answers with the restored data; a write must work after it) and RPO (the
ledger); judged against the scenario's objectives. Checked with the ledger, by id: every write
acknowledged before the latest backup began survives, every write sent after it ended is lost
(the writes in flight while it ran may go either way: they are named). A backup that skips a
table, or a restore from an older file, fails these checks with the ids. The tests swap the
procedure's commands for such variants.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from stackcheck import engine
from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.meters import spans
from stackcheck.chaos.scenarios import ScenarioRun
from stackcheck.chaos.spec import Scenario
from stackcheck.chaos.workloads import LedgerStore, answer_problem
from stackcheck.errors import StackError
from stackcheck.stack import Stack
from stackcheck.volumes import remove_volumes, run_job
from stackcheck.waiting import wait_until

SCRIPT = ("python3", "-m", "chatbot_api.backup")
PG_SCRIPT = ("bash", "/usr/local/lib/chatbot/backup.sh")  # postgres/backup.sh, mounted by stack-postgres.toml
# The damage of the corruption drill: the database file and its WAL (and shared memory) garbled.
CORRUPT = (
    "python3", "-c",
    "import os, pathlib; [p.write_bytes(os.urandom(max(p.stat().st_size, 4096)))"
    " for p in pathlib.Path(os.environ['DATABASE_PATH']).parent.glob('chatbot.db*')]",
)  # fmt: skip
BACKUPS = 2  # taken while the ledger writes; the restore must use the latest
FIRST_WRITE_TIMEOUT_S = 10.0
WRITE_CHECK = "post-message"  # a workload of the stack file: a write after the restore must work
READY_TIMEOUT_S = 60.0


def restore_latest(files: Sequence[str]) -> tuple[str, ...]:
    """The restore command: the script takes the latest backup itself (doc 002 restores by date)."""
    return (*SCRIPT, "restore")


def pg_restore_latest(files: Sequence[str]) -> tuple[str, ...]:
    return (*PG_SCRIPT, "restore")


@dataclass(frozen=True)
class Procedure:
    """How this stack is backed up and restored. ``service``: the application, stopped while the
    restore runs. ``database``: the server the commands run in (`docker exec`, running); None: the
    application's own SQLite file, backed up in the API and restored by a job of its image."""

    service: str = "api"
    backup_volume: str = "backups"
    data_volume: str = "chat-data"
    backup: tuple[str, ...] = (*SCRIPT, "backup")
    restore: Callable[[Sequence[str]], tuple[str, ...]] = restore_latest  # given the backups, oldest first
    check: tuple[str, ...] = (*SCRIPT, "check")
    database: str | None = None


# The PostgreSQL profile: doc 002's pg_dump in the postgres container, its data volume pg-data.
POSTGRES = Procedure(
    data_volume="pg-data",
    backup=(*PG_SCRIPT, "backup"),
    restore=pg_restore_latest,
    check=(*PG_SCRIPT, "check"),
    database="postgres",
)


def procedure_of(stack: Stack) -> Procedure:
    """The stack's own procedure: the PostgreSQL profile's when it runs the postgres service."""
    return POSTGRES if POSTGRES.database in stack.spec.services else Procedure()


@dataclass(frozen=True)
class Backup:
    file: str
    started: float  # monotonic, before the command was sent
    finished: float  # monotonic, after its answer
    tables: dict[str, int] = field(default_factory=dict)


def _json_line(output: str, what: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        with contextlib.suppress(ValueError):
            found = json.loads(line)
            if isinstance(found, dict):
                return found
    raise StackError(f"{what} printed no JSON result: {output[-500:]!r}", "fix the backup script's output")


def _ids(run: str, numbers: Sequence[int]) -> str:
    """Ledger ids (``${id}`` = RUN-N) as ranges: RUN-1..40, RUN-52."""
    return ", ".join(f"{run}-{a}" if a == b else f"{run}-{a}..{b}" for a, b in spans(numbers))


class Drill:
    def __init__(self, stack: Stack, exp: Experiment, scenario: Scenario, procedure: Procedure) -> None:
        if scenario.probe is None or scenario.ledger is None:
            raise StackError(
                f"scenario {scenario.name}: a backup drill needs a probe (RTO) and a ledger (RPO)",
                f"add probe and ledger to [scenarios.{scenario.name}]",
            )
        self.stack, self.exp, self.scenario, self.procedure = stack, exp, scenario, procedure
        self.run = ScenarioRun(stack, exp, scenario)
        self.current = stack  # where the probe and the read-back go: the fresh stack after a server loss

    def backup(self) -> Backup:
        p = self.procedure
        handle = self.current.service(p.database or p.service)
        started = time.monotonic()
        code, out = self.exp.action(f"backup: {' '.join(p.backup)}", lambda: handle.docker.exec_run(list(p.backup)))
        finished = time.monotonic()
        output = out.decode(errors="replace")
        if code != 0:
            raise StackError(f"the backup failed (exit {code}): {output[-500:]}", "read the API's backup output")
        result = _json_line(output, "the backup")
        made = Backup(str(result["file"]), started, finished, dict(result.get("tables") or {}))
        self.exp.observe(f"backup {made.file} in {finished - started:.2f}s: {made.tables or 'no row counts'}")
        return made

    def job(self, name: str, command: Sequence[str]) -> tuple[bool, str]:
        """A maintenance command: in the running database server, or a job of the application's image."""
        database = self.procedure.database
        if database is None:
            result = self.exp.action(
                f"{name}: {' '.join(command)}", lambda: run_job(self.current, self.procedure.service, command)
            )
            return result.ok, result.output
        handle = self.current.service(database)
        code, out = self.exp.action(
            f"{name} in {handle.name}: {' '.join(command)}", lambda: handle.docker.exec_run(list(command))
        )
        return code == 0, out.decode(errors="replace")

    def restore(self, backups: list[Backup]) -> None:
        """The runbook: the application stopped, the database restored, the application started."""
        handle = self.current.service(self.procedure.service)
        handle.docker.reload()
        if handle.docker.status == "running":
            self.exp.action(f"stop {handle.name}", lambda: handle.docker.stop(timeout=10))
        ok, output = self.job("restore", self.procedure.restore([b.file for b in backups]))
        if not ok:
            raise StackError(f"the restore failed: {output[-500:]}", "read the restore's output")
        restored = _json_line(output, "the restore")
        latest = backups[-1]
        self.exp.observe(f"restored {restored.get('file')}: {restored.get('tables')}")
        self.exp.verify(
            f"the restored file is the latest backup ({latest.file})",
            lambda: None if restored.get("file") == latest.file else f"restored {restored.get('file')}",
        )
        if latest.tables:  # runbook step 3: verify data integrity (the row count of each table)
            self.exp.verify(
                "the restored database has the latest backup's rows",
                lambda: (
                    None if restored.get("tables") == latest.tables else f"{restored.get('tables')} != {latest.tables}"
                ),
            )
        self.exp.action(f"start {handle.name}", handle.docker.start)
        faults.await_healthy(handle, READY_TIMEOUT_S)

    def corrupt(self) -> None:
        if self.procedure.database is not None:
            raise StackError(
                f"scenario {self.scenario.name}: the corruption drill garbles the API's SQLite file; "
                f"this stack's database is the {self.procedure.database} server",
                "drill backup-restore (server loss) on the PostgreSQL profile",
            )
        self.job("corrupt the database file and its WAL", CORRUPT)
        healthy, output = self.job("integrity check (runbook: assessment)", self.procedure.check)
        self.exp.verify(
            "the damage is real: the integrity check fails",
            lambda: "the integrity check passed: nothing was damaged" if healthy else None,
        )
        self.exp.observe(f"integrity check: {output.strip()[-300:]}")

    def lose_server(self, cleanup: contextlib.ExitStack) -> None:
        p, lost = self.procedure, self.stack
        data = lost.volume(p.data_volume)
        kept = self.exp.action(
            f"the server is lost: stack {lost.run_id} and its volumes removed, except {p.backup_volume}",
            lambda: lost.stop(keep_volumes=[p.backup_volume]),
        )
        # Removed whatever happens next (the fresh stack removes it too, once it has adopted it).
        cleanup.callback(remove_volumes, engine.client(), list(kept.values()))
        self.exp.verify(f"the data volume {data} is gone", lambda: _volume_problem(lost, data))
        fresh = Stack(lost.spec, volumes=kept)
        cleanup.callback(fresh.stop)
        self.exp.action(f"boot a fresh stack {fresh.run_id} on the kept {p.backup_volume} volume", fresh.start)
        self.exp.observe(f"fresh stack up in {fresh.boot_seconds:.1f}s")
        self.current = fresh

    def drill(self, server_loss: bool) -> ExperimentResult:
        s, exp, run = self.scenario, self.exp, self.run
        assert run.ledger is not None
        assert s.probe is not None
        request, numbers = run.request(s.probe), itertools.count(1)
        meter = exp.rto(
            lambda timeout: answer_problem(self.current, request, timeout, next(numbers)) is None,
            probe_timeout=s.probe_timeout_s,
        )
        run.meter = meter
        store, sent = run.ledger, {}

        def write(n: int) -> None:
            sent[n] = time.monotonic()
            store.write(n)

        with contextlib.ExitStack() as cleanup:
            with exp.ledger(write, interval_s=store.ledger.interval_s) as ledger:
                # The probe reads data of this drill (its first write): wait until there is some.
                if wait_until(lambda: bool(ledger.acks) or None, FIRST_WRITE_TIMEOUT_S) is None:
                    raise StackError(
                        f"no ledger write acknowledged within {FIRST_WRITE_TIMEOUT_S:g}s", "read the API's logs"
                    )
                run.steady_state()
                cleanup.enter_context(meter)
                backups = []
                for _ in range(BACKUPS):
                    time.sleep(s.timing.warmup_s)
                    backups.append(self.backup())
                time.sleep(s.timing.after_s)
            store.close()
            with run.fault():  # the API killed, left down
                self.lose_server(cleanup) if server_loss else self.corrupt()
                time.sleep(s.timing.duration_s)  # detection and decision, before the restore starts
                self.restore(backups)
                exp.await_recovery(s.timing.recovery_timeout_s or READY_TIMEOUT_S)
            write_check = run.request(WRITE_CHECK)
            exp.verify(
                f"a write through the edge succeeds after the restore ({write_check.workload.describe()})",
                lambda: answer_problem(self.current, write_check, 5.0),
            )
            surviving = LedgerStore(self.current, store.ledger, self.current.spec.chaos.workloads, run.run_tag)
            present = surviving.surviving()
            report = exp.reconcile(present)
            exp.observe(f"ledger {store.ledger.name}: {report.describe()}")
            self.judge(ledger.acks, sent, backups[-1], set(present))
            verifier = ScenarioRun(self.current, exp, s)
            verifier.meter = meter
            verifier.verify()
            cleanup.close()  # the probe stopped, a fresh stack removed: before the result is made
            return run.finish()

    def judge(self, acks: dict[int, float], sent: dict[int, float], latest: Backup, present: set[int]) -> None:
        """Exactly the writes after the latest backup are lost, by id."""
        tag, exp = self.run.run_tag, self.exp
        before = sorted(n for n, t in acks.items() if t < latest.started)
        after = sorted(n for n in acks if sent[n] > latest.finished)
        in_flight = sorted(set(acks) - set(before) - set(after))
        missing = [n for n in before if n not in present]
        kept = [n for n in after if n in present]
        exp.verify(
            f"all {len(before)} writes acknowledged before the latest backup began survived the restore",
            lambda: (
                None
                if not missing
                else f"{len(missing)} missing: {_ids(tag, missing)} "
                "(the backup left data out, or an older file was restored)"
            ),
        )
        exp.verify(
            f"all {len(after)} writes sent after the latest backup ended are lost",
            lambda: (
                None if not kept else f"{len(kept)} survived: {_ids(tag, kept)} (not restored from the latest backup)"
            ),
        )
        if after:
            exp.observe(f"lost as expected: {len(after)} writes after the latest backup ({_ids(tag, after)})")
        if in_flight:
            survived = [n for n in in_flight if n in present]
            exp.observe(
                f"in flight during the backup: {_ids(tag, in_flight)}; survived: {_ids(tag, survived) or 'none'}"
            )
        if acks:
            exp.observe(
                f"RPO by the backup: last acknowledged write {max(acks.values()) - latest.started:.2f}s after the "
                "latest backup began"
            )


def _volume_problem(stack: Stack, name: str) -> str | None:
    """Read fresh from the engine: None when the volume is gone."""
    try:
        engine.client().volumes.get(name)
    except docker.errors.NotFound:
        return None
    return f"{name} still exists after stack {stack.run_id} was removed"


def restore_after_corruption(
    stack: Stack, experiment: Experiment, scenario: Scenario, procedure: Procedure | None = None
) -> ExperimentResult:
    """Runbook "Database Corruption": the file garbled, restored in place from the latest backup."""
    return Drill(stack, experiment, scenario, procedure or procedure_of(stack)).drill(server_loss=False)


def restore_after_server_loss(
    stack: Stack, experiment: Experiment, scenario: Scenario, procedure: Procedure | None = None
) -> ExperimentResult:
    """Runbook "Complete Server Failure": the stack and its data volume gone, the latest backup
    restored into a fresh stack that mounts the kept backup volume."""
    return Drill(stack, experiment, scenario, procedure or procedure_of(stack)).drill(server_loss=True)
