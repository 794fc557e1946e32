"""LoadRun: drive a profile against a stack or URL with Locust in subprocesses, then judge it.

    from stackcheck.load import LoadRun, profiles
    report = LoadRun.for_stack(stack, profiles.get("smoke"), workers=2).run()
    print(report.breaches, report.regression)

Locust (and its gevent monkey-patching) never enters this process: a master and ``workers``
worker processes run the driver ``load/locustfile.py`` with the stack file's ``[load]`` mix
(``stackcheck.loadmix``) or the stack's own locustfile; the master appends every worker's raw
samples to a file that this process tails for the live progress line and the abort rule, and
reads in full at the end for exact percentiles.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stackcheck import resources
from stackcheck.load import objectives as objectives_mod
from stackcheck.load.errors import LoadError
from stackcheck.load.history import History, Machine, RunRecord, git_revision
from stackcheck.load.objectives import SustainedBreachWatch
from stackcheck.load.profiles import Mode, Profile
from stackcheck.load.regression import RegressionPolicy, Verdict, compare
from stackcheck.load.report import LoadReport, OpenLoopStats
from stackcheck.load.stats import IntervalSeries, LoadSample, summarize
from stackcheck.loadmix import LoadMix
from stackcheck.stack import Stack
from stackcheck.stackfile import LoadObjective
from stackcheck.target import HttpTarget

DRIVER = resources.product_suites()["load"] / "locustfile.py"
NO_MIX = "the stack file declares no [load] mix"
NO_MIX_FIX = "add [load.requests.NAME] tables (method, path, group, weight) or [load] locustfile: README, Load"
REPORTS = Path("reports")  # under the directory stackcheck runs in
STARTUP_TIMEOUT_S = 60.0  # master up, workers connected, data seeded
STOP_GRACE_S = 45.0  # users finish in-flight requests, the master sweeps the run's data


def default_workers() -> int:
    """One worker per two cores: each worker is one busy process, the stack needs CPU too."""
    return max(1, (os.cpu_count() or 2) // 2)


def stderr_progress(line: str, final: bool = False) -> None:
    sys.stderr.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
    sys.stderr.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Tail:
    """Incremental reader of the master's samples file (JSON lines)."""

    path: Path
    t0: float | None = None
    stopped: bool = False
    samples: list[LoadSample] = field(default_factory=list)
    users: int = 0
    users_at: dict[int, int] = field(default_factory=dict)  # second of the run -> users then
    scheduled: int = 0
    sent: int = 0
    open_reports: int = 0
    removed: int | None = None
    _offset: int = 0
    _pending: list[list[Any]] = field(default_factory=list)

    def poll(self) -> list[LoadSample]:
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            self._line(json.loads(line))
        if self.t0 is None:
            return []
        new = [
            LoadSample(r[0] - self.t0, r[1], r[2], r[3], r[4], r[5], r[6] if len(r) > 6 else None)
            for r in self._pending
        ]
        self._pending.clear()
        self.samples.extend(new)
        return new

    def _line(self, data: dict[str, Any]) -> None:
        if "start" in data:
            self.t0 = data["start"]
        if "users" in data:
            self.users = data["users"]
            if self.t0 is not None:
                self.users_at[max(0, int(data["at"] - self.t0))] = data["users"]
        if "stop" in data:
            self.stopped, self.removed = True, data["removed"]
        if "failed" in data:
            raise LoadError(f"the load run could not start: {data['failed']}", "fix the stack file's [load.seed]")
        self._pending.extend(data.get("samples", []))
        if data.get("scheduled") is not None:
            self.scheduled += data["scheduled"]
            self.sent += data["sent"]
            self.open_reports += 1


@dataclass
class LoadRun:
    target: HttpTarget
    profile: Profile
    objectives: Mapping[str, LoadObjective] = field(default_factory=dict)
    token: str | None = None  # sent as X-Stackcheck-Load (the reference edge's rate-limit bypass)
    workers: int = field(default_factory=default_workers)
    mode: Mode = Mode.CLOSED
    max_inflight: int | None = None  # open loop: concurrent senders over all workers (default: peak rps / 4)
    abort_after_s: int = 10  # stop when an objective's p95 or error rate is breached this long; 0: never
    stack_name: str = "external"
    stack_path: Path | None = None  # for the git revision recorded in the history
    run_id: str = field(default_factory=lambda: f"load-{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}")
    reports_dir: Path = REPORTS
    history: History | None = None
    regression_policy: RegressionPolicy = field(default_factory=RegressionPolicy)
    update_baseline: bool = False
    progress: Callable[[str, bool], None] | None = stderr_progress
    mix: LoadMix | None = None  # what to send: the stack file's [load]
    late_threshold_ms: float = 10.0
    master_bind: str = "127.0.0.1"
    external_workers: int = 0  # workers started by hand on other hosts (see load/locustfile.py)

    @classmethod
    def for_stack(cls, stack: Stack, profile: Profile, **kwargs: Any) -> LoadRun:
        """A run against ``stack``'s entrypoint with its objectives, load mix and load token."""
        kwargs.setdefault("objectives", dict(stack.spec.objectives.load))
        kwargs.setdefault("mix", stack.spec.load_mix)
        kwargs.setdefault("token", stack.secrets.get("load-token"))
        return cls(stack.target(), profile, stack_name=stack.spec.name, stack_path=stack.spec.path, **kwargs)

    @property
    def out_dir(self) -> Path:
        return self.reports_dir / self.run_id / "load"

    def _plan(self, mix: LoadMix, samples_file: Path) -> dict[str, Any]:
        total_workers = self.workers + self.external_workers
        if total_workers < 1:
            raise LoadError("a load run needs at least one worker", "pass workers=1 or more")
        if mix.locustfile is not None and self.mode is Mode.OPEN:
            raise LoadError(
                f"open loop sends the stack file's [load.requests]; {mix.locustfile} runs its own users",
                "run the stack's locustfile closed loop (the default), or declare the mix as data",
            )
        peak_rps = self.profile.peak * self.profile.rps_per_level
        inflight = self.max_inflight or max(4, math.ceil(peak_rps / 4))
        return {
            "host": self.target.base_url,
            "ca_file": str(self.target.ca_file) if self.target.ca_file else None,
            "token": self.token,
            "profile": self.profile.to_dict(),
            "mode": self.mode.value,
            "workers": total_workers,
            "pool_per_worker": math.ceil(inflight / total_workers),
            "run": f"sc-{self.run_id}",  # ${run}: marks what this run creates, for its cleanup
            "mix": mix.to_plan(),
            "samples_file": str(samples_file),
        }

    def run(self) -> LoadReport:
        if self.mix is None:
            raise LoadError(NO_MIX, NO_MIX_FIX)
        if not DRIVER.exists():
            raise LoadError(f"the load driver {DRIVER} does not exist", "reinstall stackcheck")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        samples_file = self.out_dir / "raw-samples.jsonl"
        samples_file.unlink(missing_ok=True)
        plan = self._plan(self.mix, samples_file)
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        tail, aborted = self._drive(plan, samples_file)
        samples_file.unlink(missing_ok=True)  # samples.csv.gz holds them in a documented format
        return self._judge(tail, aborted, started_at)

    # -- the processes ------------------------------------------------------------------------------
    def _drive(self, plan: dict[str, Any], samples_file: Path) -> tuple[_Tail, str | None]:
        port = _free_port()
        env = {**os.environ, "STACKCHECK_LOAD_PLAN": json.dumps(plan), "PYTHONUNBUFFERED": "1"}
        assert self.mix is not None
        files, user_classes = str(DRIVER), ["OpenLoopUser" if self.mode is Mode.OPEN else "ClosedLoopUser"]
        if self.mix.locustfile is not None:  # the driver's shape and samples, the stack's users (all of them)
            files, user_classes = f"{DRIVER},{self.mix.locustfile}", []
            if self.target.ca_file:  # so that the stack's own clients trust the run's CA too
                env |= {"SSL_CERT_FILE": str(self.target.ca_file), "REQUESTS_CA_BUNDLE": str(self.target.ca_file)}
        locust = [sys.executable, "-m", "locust", "-f", files, "--loglevel", "WARNING"]
        master_cmd = [
            *locust, "--master", "--headless", "--master-bind-host", self.master_bind,
            "--master-bind-port", str(port), "--expect-workers", str(plan["workers"]),
            "--expect-workers-max-wait", str(int(STARTUP_TIMEOUT_S)), "--host", self.target.base_url,
            "--stop-timeout", "5", "--exit-code-on-error", "0", "--only-summary", *user_classes,
        ]  # fmt: skip
        worker_cmd = [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        logs: list[IO[bytes]] = []
        procs: list[subprocess.Popen[bytes]] = []
        tail: _Tail | None = None

        def spawn(cmd: list[str], name: str) -> subprocess.Popen[bytes]:
            log = (self.out_dir / f"{name}.log").open("wb")
            logs.append(log)
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            return proc

        try:
            master = spawn(master_cmd, "locust-master")
            for i in range(self.workers):
                spawn(worker_cmd, f"locust-worker-{i}")
            if self.external_workers:
                self._say(
                    f"waiting for {self.external_workers} external worker(s): STACKCHECK_LOAD_PLAN='{json.dumps(plan)}'"
                    f" locust -f {files} --worker --master-host THIS_HOST --master-port {port}",
                    True,
                )
            tail = _Tail(samples_file)
            return tail, self._watch(master, procs, tail)
        except (KeyboardInterrupt, LoadError):  # Ctrl-C, SIGTERM (stackcheck.interrupt), a failed start: stop now
            for proc in procs:
                self._end(proc, wait_first=False)
            raise
        finally:
            # After the master's stop record every sample and the cleanup are in: Locust's own
            # shutdown (about 2 s of quit messages) has nothing left to give.
            done = tail is not None and tail.stopped
            for proc in procs:
                self._end(proc, wait_first=not done)
            for log in logs:
                log.close()

    def _watch(self, master: subprocess.Popen[bytes], procs: list[subprocess.Popen[bytes]], tail: _Tail) -> str | None:
        series = IntervalSeries(self.late_threshold_ms)
        watch = SustainedBreachWatch(self.objectives, self.abort_after_s)
        launched = time.monotonic()
        run_deadline: float | None = None
        aborted: str | None = None
        last_second = -1
        while master.poll() is None:
            time.sleep(0.2)
            series.add(tail.poll())
            if tail.stopped:
                break
            now = time.monotonic()
            if tail.t0 is None:
                dead = [p for p in procs if p.poll() is not None]
                if dead or now - launched > STARTUP_TIMEOUT_S:
                    why = f"exited with {dead[0].returncode}" if dead else f"not started in {STARTUP_TIMEOUT_S:.0f}s"
                    raise LoadError(f"Locust {why}:\n{self._log_tail()}", f"read the logs in {self.out_dir}")
                continue
            if run_deadline is None:
                run_deadline = now + self.profile.duration_s + STOP_GRACE_S
            elapsed = time.time() - tail.t0
            second = int(elapsed) - 1  # the last interval that is complete (give late batches 1 s)
            if second > last_second >= -1 and not tail.stopped:
                last_second = second
                series.users[max(second, 0)] = tail.users
                self._progress_line(series, max(second, 0), elapsed, tail.users)
                breach = watch.check(series, max(second, 0)) if aborted is None else None
                if breach is not None:
                    aborted = (
                        f"aborted after {elapsed:.0f}s: {breach.scope} {breach.metric.value} over {breach.target:g} "
                        f"in every interval for {self.abort_after_s}s (at least {breach.measured:.4g})"
                    )
                    self._say(aborted, True)
                    master.send_signal(signal.SIGTERM)  # Locust stops its workers and quits
            if now > run_deadline:
                aborted = (
                    aborted or f"aborted: the run did not finish within {self.profile.duration_s + STOP_GRACE_S:.0f}s"
                )
                self._say(aborted, True)
                break
        series.add(tail.poll())
        if tail.t0 is None:
            raise LoadError(f"Locust ended before the run started:\n{self._log_tail()}", f"read {self.out_dir}")
        if self.progress is not None:
            self._progress_line(series, max(last_second, 0), time.time() - tail.t0, tail.users, final=True)
        return aborted

    def _progress_line(
        self, series: IntervalSeries, second: int, elapsed: float, users: int, final: bool = False
    ) -> None:
        interval = series.interval(second)
        errors = sum(1 for bucket in series.buckets.values() for s in bucket if not s.ok)
        p95 = "-" if math.isnan(interval.p95_ms) else f"{interval.p95_ms:.1f} ms"
        self._say(
            f"[load {self.profile.name}/{self.mode.value}] {elapsed:5.1f}s/{self.profile.duration_s:.0f}s "
            f"users {users:3d}  rps {interval.requests:4d}  p95 {p95:>9}  errors {errors}",
            final,
        )

    def _say(self, line: str, final: bool = False) -> None:
        if self.progress is not None:
            self.progress(line, final)

    def _end(self, proc: subprocess.Popen[bytes], wait_first: bool = True) -> None:
        """Wait for a process to exit; SIGTERM, then SIGKILL its process group if it will not."""
        for sig in (None, signal.SIGTERM, signal.SIGKILL) if wait_first else (signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE_S if sig is None else 5)
                return

    def _log_tail(self, lines: int = 15) -> str:
        parts = []
        for log in sorted(self.out_dir.glob("locust-*.log")):
            text = log.read_text(errors="replace").strip().splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- judging ------------------------------------------------------------------------------------
    def _judge(self, tail: _Tail, aborted: str | None, started_at: str) -> LoadReport:
        samples = sorted(tail.samples, key=lambda s: s.t)
        # An aborted run lasted until its last answer; a complete one as long as its profile.
        duration = (samples[-1].t if samples else 0.0) if aborted or not samples else self.profile.duration_s
        if not samples:
            aborted = aborted or "no request completed"
        seconds = math.ceil(duration)
        series = IntervalSeries(self.late_threshold_ms)
        series.add(samples)
        users = 0
        for second in range(seconds):
            series.users[second] = users = tail.users_at.get(second, users)
        open_loop = None
        if self.mode is Mode.OPEN:
            open_loop = OpenLoopStats(
                scheduled=tail.scheduled,
                sent=tail.sent,
                late=sum(s.late_ms > self.late_threshold_ms for s in samples),
                max_late_ms=max((s.late_ms for s in samples), default=0.0),
                late_threshold_ms=self.late_threshold_ms,
            )
        breaches, _ = objectives_mod.evaluate(self.objectives, samples, duration)
        machine = Machine.this()
        report = LoadReport(
            run_id=self.run_id,
            stack=self.stack_name,
            git_rev=git_revision(self.stack_path) if self.stack_path else "unknown",
            target=self.target.base_url,
            profile=self.profile.to_dict(),
            mode=self.mode.value,
            workers=self.workers + self.external_workers,
            started_at=started_at,
            duration_s=duration,
            aborted=aborted,
            total=summarize(samples, duration, self.late_threshold_ms),
            endpoints={
                e: summarize([s for s in samples if s.endpoint == e], duration, self.late_threshold_ms)
                for e in sorted({s.endpoint for s in samples})
            },
            groups={
                g: summarize([s for s in samples if s.group == g], duration, self.late_threshold_ms)
                for g in sorted({s.group for s in samples})
            },
            open_loop=open_loop,
            breaches=breaches,
            machine={"cpu_model": machine.cpu_model, "cores": machine.cores, "fingerprint": machine.fingerprint},
            intervals=series.rows(seconds),
        )
        if self.history is not None and aborted is None:
            self._record(report, series, machine)
        report.write(self.out_dir, samples)
        return report

    def regression_series(self, series: IntervalSeries, duration: float) -> list[float]:
        """Per-second p95 over the steady part of the run: warm-up and the last partial second left out."""
        first = math.ceil(self.profile.warmup_s)
        return [series.interval(s).p95_ms for s in range(first, int(duration))]

    def _record(self, report: LoadReport, series: IntervalSeries, machine: Machine) -> None:
        assert self.history is not None
        p95s = self.regression_series(series, report.duration_s)
        profile_hash = hashlib.sha256(json.dumps(self.profile.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        key = (self.stack_name, profile_hash, self.mode.value, machine.fingerprint)
        baseline = self.history.baseline(key, self.regression_policy.baseline_runs)
        result = compare(p95s, [r.interval_p95 for r in baseline], self.regression_policy)
        report.regression = result
        epoch = self.history.current_epoch(key)
        accepted = self.update_baseline or result.verdict in (Verdict.UNCHANGED, Verdict.NO_BASELINE)
        self.history.add(
            RunRecord(
                run_id=self.run_id,
                created_at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                stack=self.stack_name,
                git_rev=report.git_rev,
                profile=self.profile.name,
                profile_hash=profile_hash,
                mode=self.mode.value,
                workers=report.workers,
                machine=machine,
                metrics=report.total.to_dict(),
                interval_p95=p95s,
                verdict=result.verdict.value,
                accepted=accepted,
                epoch=epoch + 1 if self.update_baseline else epoch,
            )
        )
