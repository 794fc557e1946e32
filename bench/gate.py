"""Gate timings: warm boot of the stack, then the gate serially and with 2 and 4 pytest-xdist
workers (when `stackcheck gate --workers` exists), phase timings side by side.

    .venv/bin/python bench/gate.py [--profile smoke] [--workers 1 2 4] [--boots 3] [--lock FILE]

Phases per area (compliance, load, chaos) come from each run's results.json; engine, images and
suites from the gate's own output. --lock FILE holds that flock(1) file around each Docker step
(one boot, one gate), for an engine shared with others. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stackcheck.stack import DEFAULT_STACK, Stack

AREAS = ("compliance", "load", "chaos")


@dataclass
class GateRun:
    workers: int
    wall_s: float
    code: int
    gate_phases: dict[str, float] = field(default_factory=dict)  # engine, images, suites
    areas: dict[str, float] = field(default_factory=dict)  # from results.json
    verdict: str = "?"
    tests: dict[str, int] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)  # area/check -> status


@contextlib.contextmanager
def engine_lock(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gate_has_workers() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", "gate", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--workers" in out


def boot_seconds(stack: Path, boots: int, lock: str | None) -> list[float]:
    seconds = []
    with engine_lock(lock):  # ~15 s a boot and teardown: one hold for all of them
        build = [sys.executable, "-m", "stackcheck.cli", "images", "build", "--stack", str(stack)]
        subprocess.run(build, check=True, stdout=subprocess.DEVNULL)  # warm: every image built
        for _ in range(boots):
            running = Stack.from_file(stack).start()
            seconds.append(float(running.boot_seconds or 0.0))
            running.stop()
    return seconds


def run_gate(stack: Path, profile: str, workers: int | None, lock: str | None) -> GateRun:
    args = [sys.executable, "-m", "stackcheck.cli", "gate", "--stack", str(stack), "--profile", profile]
    if workers is not None:
        args += ["--workers", str(workers)]
    with engine_lock(lock):
        started = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
    out = done.stdout + done.stderr
    run = GateRun(workers or 1, wall, done.returncode)
    phases = re.search(r"^phases: (.*); total", out, re.MULTILINE)
    if phases:
        for part in phases.group(1).split(", "):
            name, _, seconds = part.rpartition(" ")
            run.gate_phases[name] = float(seconds.rstrip("s"))
    report = re.search(r"^report: (.+)$", out, re.MULTILINE)
    results = Path(report.group(1).strip()) / "results.json" if report else None
    if results is None or not results.exists():
        print(f"gate with {run.workers} worker(s) wrote no results.json (exit {done.returncode}):\n{out[-2000:]}")
        return run
    data = json.loads(results.read_text())
    run.areas = {p["name"]: float(p["seconds"]) for p in data.get("phases", [])}
    run.verdict, run.tests = data["verdict"], data["tests"]
    run.checks = {f"{c['area']}/{c['check']}": c["status"] for c in data.get("checks", [])}
    return run


def table(runs: list[GateRun], boots: list[float]) -> str:
    head = f"{'workers':>7} {'wall s':>7} {'images':>7} {'suites':>7}"
    head += "".join(f" {a:>10}" for a in AREAS) + f" {'verdict':>8} {'passed':>6} {'failed':>6}"
    lines = [head]
    for run in runs:
        row = f"{run.workers:>7} {run.wall_s:>7.1f} {run.gate_phases.get('images', float('nan')):>7.1f}"
        row += f" {run.gate_phases.get('suites', float('nan')):>7.1f}"
        row += "".join(f" {run.areas.get(a, float('nan')):>10.1f}" for a in AREAS)
        row += f" {run.verdict:>8} {run.tests.get('passed', 0):>6} {run.tests.get('failed', 0):>6}"
        lines.append(row)
    if boots:
        lines.append(f"warm boot: median {statistics.median(boots):.1f} s of {', '.join(f'{b:.1f}' for b in boots)}")
    for run in runs[1:]:
        serial = runs[0].checks
        differ = sorted(k for k in serial.keys() | run.checks.keys() if serial.get(k) != run.checks.get(k))
        same = "identical to serial" if not differ else f"{len(differ)} differ from serial: {', '.join(differ[:8])}"
        lines.append(f"{run.workers} workers: check statuses {same}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", type=Path, default=DEFAULT_STACK)
    parser.add_argument("--profile", choices=["smoke", "full"], default="smoke")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--boots", type=int, default=3, help="warm boots to time (median)")
    parser.add_argument("--lock", default=None, help="flock this file around each boot and each gate")
    opts = parser.parse_args()
    workers: list[int | None] = list(opts.workers)
    if not gate_has_workers():
        print("this stackcheck has no `gate --workers`: the gate runs serially only")
        workers = [None]
    boots = boot_seconds(opts.stack, opts.boots, opts.lock)
    print(f"warm boots: {', '.join(f'{b:.2f}' for b in boots)} s", flush=True)
    runs = []
    for n in workers:
        runs.append(run_gate(opts.stack, opts.profile, n, opts.lock))
        print(f"gate ({opts.profile}) with {runs[-1].workers} worker(s): {runs[-1].wall_s:.1f} s", flush=True)
    print(f"\n{table(runs, boots)}")


if __name__ == "__main__":
    main()
