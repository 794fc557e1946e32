"""Flake record: run the gate N times and tabulate every check's outcome per run.

    .venv/bin/python bench/flakes.py --runs 10 --profile smoke
    .venv/bin/python bench/flakes.py --runs 10 --workers 2        # parallel gates (pytest-xdist)
    .venv/bin/python bench/flakes.py --from reports/RUN_A reports/RUN_B   # tabulate earlier runs

Each run is a real ``stackcheck gate`` (its own stack, its own reports/<run-id>/results.json).
Rows come from each results.json: the gate's verdict per check (``checks``: compliance rules,
load runs and their regression checks, chaos scenarios), each compliance rule's outcomes over
its subjects, each load objective (met, or breached with the measured value) and each chaos
experiment. A row is a flake when its outcome is not the same in every run (a run that lacks
the row counts as a different outcome). The NOT EVALUATED column counts the runs in which the
check judged nothing. Writes the matrix to reports/flakes-<time>.json as well. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stackcheck.results import load_results

ROOT = Path(__file__).resolve().parent.parent
MISSING = "-"
NOT_EVALUATED = ("not_evaluated", "not-evaluated", "inconclusive", "no-baseline")


@dataclass
class Run:
    label: str
    exit_code: int | None
    seconds: float
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    problem: str = ""


def outcomes(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(kind, check) -> outcome for one results.json."""
    rows: dict[tuple[str, str], str] = {("gate", "verdict"): str(data["verdict"])}
    for check in data["checks"]:
        rows[(f"check:{check['area']}", str(check["check"]))] = str(check["status"])
    by_rule: dict[str, Counter[str]] = {}
    for entry in data["compliance"]:
        by_rule.setdefault(str(entry["rule"]), Counter())[str(entry["outcome"])] += 1
    for rule, counts in by_rule.items():
        rows[("compliance rule", rule)] = " ".join(f"{o}:{n}" for o, n in sorted(counts.items()))
    for load in data["load"]:
        profile = load.get("profile", {}).get("name", "?")
        for breach in load.get("breaches", []):
            rows[("load objective", f"{profile} {breach['scope']} {breach['metric']}")] = "breached"
        rows[("load run", profile)] = "aborted" if load.get("aborted") else "ran"
        regression = load.get("regression") or {}
        if regression:
            rows[("load regression", profile)] = str(regression.get("verdict"))
    for experiment in data["chaos"]:
        rows[("chaos scenario", str(experiment["scenario"]))] = "passed" if experiment["passed"] else "failed"
    return rows


def complete_load_objectives(runs: list[Run]) -> None:
    # results.json lists breached objectives only: one breached in some run was met in every other
    # run whose same profile ran (not aborted early).
    keys = {k for r in runs for k in r.outcomes if k[0] == "load objective"}
    for run in runs:
        for key in keys:
            profile = key[1].split(" ", 1)[0]
            if key not in run.outcomes and run.outcomes.get(("load run", profile)) == "ran":
                run.outcomes[key] = "met"


def gate(profile: str, extra: list[str], index: int, total: int) -> Run:
    cmd = [sys.executable, "-m", "stackcheck.cli", "gate", "--profile", profile, *extra]
    print(f"== run {index}/{total}: {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report = None
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(f"   {line}")
        match = re.match(r"report: (\S+)", line)
        report = Path(match.group(1)) if match else report
    code = proc.wait()
    run = Run(f"run{index}", code, time.monotonic() - started)
    if report is None:
        run.problem = f"gate exited {code} without a report"
        return run
    run.label = report.name
    return read(run, report)


def read(run: Run, run_dir: Path) -> Run:
    try:
        run.outcomes = outcomes(load_results(run_dir / "results.json"))
    except Exception as exc:  # one unreadable run must not hide the others: it shows as a column of "-"
        run.problem = f"{run_dir}: {exc}"
    return run


@dataclass(frozen=True)
class Row:
    kind: str
    check: str
    outcomes: list[str]  # one per run, MISSING where the run lacks the check
    not_evaluated: int  # runs in which the check judged nothing

    @property
    def name(self) -> str:
        return f"{self.kind} {self.check}"

    @property
    def flaky(self) -> bool:
        return len(set(self.outcomes)) > 1


def table(runs: list[Run]) -> tuple[str, list[Row]]:
    rows = []
    for key in sorted({k for r in runs for k in r.outcomes}):
        values = [r.outcomes.get(key, MISSING) for r in runs]
        rows.append(Row(*key, values, sum(any(word in v for word in NOT_EVALUATED) for v in values)))
    width = max([len(r.name) for r in rows] + [5])
    cols = [max(len(r.label[-12:]), *(len(row.outcomes[i]) for row in rows), 4) for i, r in enumerate(runs)]
    head = f"{'check':<{width}}  " + "  ".join(f"{r.label[-12:]:<{c}}" for r, c in zip(runs, cols, strict=True))
    lines = [head + "  NOT EVALUATED  flake", "-" * (len(head) + 22)]
    for row in rows:
        cells = "  ".join(f"{v:<{c}}" for v, c in zip(row.outcomes, cols, strict=True))
        ne = str(row.not_evaluated) if row.not_evaluated else ""
        lines.append(f"{row.name:<{width}}  {cells}  {ne:<13}  {'FLAKE' if row.flaky else ''}")
    flaky = [r for r in rows if r.flaky]
    lines.append(f"\n{len(flaky)} flaky of {len(rows)} checks over {len(runs)} runs")
    for run in runs:
        state = f"exit {run.exit_code}" if run.exit_code is not None else "read"
        lines.append(f"  {run.label}: {state}, {run.seconds:.0f}s{'; ' + run.problem if run.problem else ''}")
    return "\n".join(lines), rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="gate runs (default 3)")
    ap.add_argument("--profile", choices=["smoke", "full"], default="smoke")
    ap.add_argument("--stack", default=None, help="stack file (default: the gate's)")
    ap.add_argument("--area", action="append", default=[], help="only these gate areas")
    ap.add_argument("--workers", type=int, default=1, help="each gate's pytest-xdist workers (default 1: serial)")
    ap.add_argument("--online", action="store_true", help="registry image base (default: offline, as scripts/gate)")
    ap.add_argument("--from", dest="existing", nargs="+", type=Path, help="tabulate these run directories instead")
    args = ap.parse_args()
    if args.existing:
        runs = [read(Run(d.name, None, 0.0), d) for d in args.existing]
    else:
        extra = ["--online" if args.online else "--offline"] + (["--stack", args.stack] if args.stack else [])
        extra += [a for area in args.area for a in ("--area", area)]
        extra += ["--workers", str(args.workers)] if args.workers > 1 else []
        runs = [gate(args.profile, extra, i + 1, args.runs) for i in range(args.runs)]
    complete_load_objectives(runs)
    text, rows = table(runs)
    print(f"\n{text}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "reports" / f"flakes-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "profile": None if args.existing else args.profile,
        "runs": [{"run": r.label, "exit": r.exit_code, "seconds": r.seconds, "problem": r.problem} for r in runs],
        "rows": [asdict(r) | {"flaky": r.flaky} for r in rows],
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"matrix: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
