"""False positives of the load regression verdict on a quiet and on a busy machine.

    .venv/bin/python bench/regression_noise.py [--runs 12]

Nothing in these runs changes, so every REGRESSED (or IMPROVED) verdict is a false positive.
Quiet: only the measured stack is up. Busy: a second stack is up and serves background traffic
(4 clients through its edge, reads and writes), as on a shared CI host. Per condition: 2
warm-up runs, then N recorded smoke runs of ``--seconds``; each run from the 4th on is judged
against the runs before it (the last 5) with today's band (stackcheck.load.regression) and with
the band used before (2 x the largest deviation of a run median from their median). Prints the
verdict counts and the measured run-to-run noise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: the test's background load

from stackcheck.chaos.workloads import Traffic
from stackcheck.load import History, LoadRun, RegressionPolicy, Verdict, profiles
from stackcheck.load.regression import compare, mann_whitney
from stackcheck.stack import Stack
from tests.integration.test_load import busy_request


def previous_band(candidate: Sequence[float], runs: Sequence[Sequence[float]], policy: RegressionPolicy) -> str:
    """The verdict with the band used before the adaptive one: max(min_effect, 2 x max deviation)."""
    pooled = [v for run in runs for v in run]
    _, p = mann_whitney(candidate, pooled)
    base, cand = statistics.median(pooled), statistics.median(candidate)
    effect = (cand - base) / base
    medians = [statistics.median(run) for run in runs]
    center = statistics.median(medians)
    noise = max(abs(m / center - 1) for m in medians)
    if p < policy.alpha and abs(effect) > max(policy.min_effect, 2 * noise) and abs(cand - base) > policy.min_effect_ms:
        return "regressed" if effect > 0 else "improved"
    return "unchanged"


def series(stack: Stack, runs: int, seconds: float, history_file: Path) -> list[list[float]]:
    """Interval p95s of ``runs`` recorded runs, after 2 warm-up runs; oldest first."""
    history = History(history_file)
    profile = profiles.get("smoke").with_duration(seconds)
    for i in range(2 + runs):
        LoadRun.for_stack(
            stack,
            profile,
            reports_dir=history_file.parent,
            workers=1,
            abort_after_s=0,
            progress=None,
            history=history if i >= 2 else None,
        ).run()
    return [r.interval_p95 for r in reversed(history.runs(runs))]


def judge(label: str, recorded: list[list[float]]) -> None:
    policy = RegressionPolicy()
    now: Counter[str] = Counter()
    before: Counter[str] = Counter()
    for i in range(policy.min_baseline_runs, len(recorded)):
        baseline = recorded[max(0, i - policy.baseline_runs) : i]
        result = compare(recorded[i], baseline, policy)
        now[result.verdict.value] += 1
        before[previous_band(recorded[i], baseline, policy)] += 1
        if result.verdict is not Verdict.UNCHANGED:
            print(f"  {label} run {i + 1}: {result.line()}")
    medians = [statistics.median(r) for r in recorded]
    noise = statistics.stdev(medians) / statistics.mean(medians)
    print(
        f"{label}: {len(recorded)} runs, median interval p95 {statistics.mean(medians):.1f} ms, run-to-run sd "
        f"{noise:.1%}\n  adaptive band: {dict(now)}\n  previous band: {dict(before)}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="recorded runs per condition (default 12)")
    ap.add_argument("--seconds", type=float, default=9.0, help="length of each run (default 9, as the test)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Stack.from_file() as measured:
        judge("quiet", series(measured, args.runs, args.seconds, Path(tmp) / "quiet.sqlite"))
        with contextlib.ExitStack() as busy:
            other = busy.enter_context(Stack.from_file())
            background = busy.enter_context(Traffic(other, busy_request, concurrency=4, max_s=3600))
            recorded = series(measured, args.runs, args.seconds, Path(tmp) / "busy.sqlite")
            print(f"background traffic: {background.window().describe()}")
        judge("busy", recorded)


if __name__ == "__main__":
    main()
