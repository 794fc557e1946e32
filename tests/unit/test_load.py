"""stackcheck.load without Locust or containers: percentiles, objectives, regression, history, schema."""

from __future__ import annotations

import gzip
import json
import math
import random
import statistics
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from stackcheck.load import (
    History,
    LoadReport,
    LoadSample,
    Machine,
    Metric,
    OpenLoopStats,
    RegressionPolicy,
    ReportSchemaError,
    RunRecord,
    Verdict,
    percentile,
    profiles,
    read_samples,
    validate,
)
from stackcheck.load import objectives as obj
from stackcheck.load.regression import T_995, compare, mann_whitney
from stackcheck.load.stats import IntervalSeries, decode_histogram, summarize
from stackcheck.stackfile import LoadObjective


def reference_percentile(values: list[float], q: float) -> float:
    """The smallest sample with at least q % of all samples at or below it (exact arithmetic)."""
    need = Fraction(str(q)) / 100 * len(values)
    return min(v for v in values if sum(w <= v for w in values) >= need)


@pytest.mark.parametrize("seed", range(20))
def test_percentiles_match_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    values = [round(rng.lognormvariate(3, 1), rng.choice([0, 3])) for _ in range(rng.randint(1, 400))]
    ordered = sorted(values)
    for q in (0.1, 50, 90, 95, 99, 99.9, 100):
        assert percentile(ordered, q) == reference_percentile(values, q)


def test_summary_counts_errors_by_kind_and_late_sends() -> None:
    samples = [
        LoadSample(0.1 * i, "get", "read", float(i), late_ms=20.0 if i % 10 == 0 else 0.0) for i in range(1, 101)
    ]
    samples += [
        LoadSample(5.0, "get", "read", 500.0, error="http-503"),
        LoadSample(5.0, "get", "read", 10_000.0, error="timeout"),
    ]
    s = summarize(samples, duration_s=10)
    assert (s.count, s.errors, s.errors_by_kind, s.late) == (102, 2, {"http-503": 1, "timeout": 1}, 10)
    assert s.rps == pytest.approx(10.2)
    assert s.percentiles_ms == {"p50": 51.0, "p90": 92.0, "p95": 97.0, "p99": 500.0, "p99.9": 10_000.0}
    assert s.max_ms == 10_000.0


def test_histogram_agrees_with_exact_percentiles_to_three_digits() -> None:
    rng = random.Random(1)
    samples = [LoadSample(0, "e", "g", rng.uniform(1, 900)) for _ in range(5000)]
    ordered = sorted(s.latency_ms for s in samples)
    from stackcheck.load.stats import histogram

    hist = decode_histogram(histogram(samples).encode().decode())
    for q in (50, 95, 99):
        assert hist.get_value_at_percentile(q) / 1000 == pytest.approx(percentile(ordered, q), rel=2e-3)


def test_profiles_ramp_linearly_and_scale_in_time() -> None:
    stages = profiles.get("stages")
    assert stages.duration_s == pytest.approx(24 * 60 * profiles.STAGES_TIME_SCALE)
    assert [stages.level_at(t) for t in (0, 3, 6, 10)] == pytest.approx([0, 5, 10, 10])
    assert stages.level_at(stages.duration_s) == 0
    smoke = profiles.get("smoke")
    assert smoke.duration_s <= 30
    assert smoke.with_duration(10).duration_s == pytest.approx(10)
    assert profiles.Profile.from_dict(smoke.to_dict()) == smoke
    with pytest.raises(profiles.LoadError, match="no load profile"):
        profiles.get("nope")


def _samples(endpoint: str, group: str, latencies: list[float], errors: int = 0) -> list[LoadSample]:
    out = [LoadSample(i * 0.01, endpoint, group, v) for i, v in enumerate(latencies)]
    return out + [LoadSample(0.5, endpoint, group, 1.0, error="http-500") for _ in range(errors)]


def test_objectives_breach_table_by_endpoint_group_and_default() -> None:
    samples = (
        _samples("create", "write", [300.0] * 100)
        + _samples("list", "read", [20.0] * 100, errors=20)
        + _samples("health", "health", [5.0] * 50)
    )
    objectives = {
        "default": LoadObjective(p95_ms=250, max_error_rate=0.1),
        "health": LoadObjective(p95_ms=100, max_error_rate=0.0, min_rps=10),
        "total": LoadObjective(min_rps=1000),
    }
    breaches, _ = obj.evaluate(objectives, samples, duration_s=1)
    found = {(b.scope, b.objective, b.metric) for b in breaches}
    assert found == {
        ("create", "default", Metric.P95),
        ("list", "default", Metric.ERROR_RATE),
        ("total", "total", Metric.RPS),
    }
    table = obj.breach_table(breaches)
    assert "create" in table
    assert "p95_ms" in table
    assert "300" in table


def test_an_objective_without_requests_is_a_breach() -> None:
    breaches, _ = obj.evaluate({"write": LoadObjective(p95_ms=100)}, _samples("list", "read", [1.0]), 1)
    assert [(b.scope, b.metric) for b in breaches] == [("write", Metric.P95)]


def test_sustained_breach_needs_the_whole_window() -> None:
    watch = obj.SustainedBreachWatch({"default": LoadObjective(p95_ms=100)}, window_s=5)
    series = IntervalSeries()
    for second in range(12):
        slow = 4 <= second < 8 or second >= 9  # 4 s slow, one good second, then 3 s slow
        series.add(LoadSample(second + i / 20, "get", "read", 300.0 if slow else 10.0) for i in range(20))
    assert watch.check(series, 12) is None
    series.add(LoadSample(12 + i / 20, "get", "read", 300.0) for i in range(20))
    series.add(LoadSample(13 + i / 20, "get", "read", 300.0) for i in range(20))
    breach = watch.check(series, 14)
    assert breach is not None
    assert (breach.metric, breach.measured) == (Metric.P95, 300.0)


def test_mann_whitney_matches_the_textbook_value() -> None:
    u, p = mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 0
    assert p == pytest.approx(0.01219, abs=1e-4)  # normal approximation with continuity correction
    assert mann_whitney([1, 1, 1], [1, 1, 1])[1] == 1.0


def _noisy_runs(rng: random.Random, center: float, runs: int, n: int = 8, run_sd: float = 0.05) -> list[list[float]]:
    out = []
    for _ in range(runs):
        level = center * (1 + rng.gauss(0, run_sd))
        out.append([level * (1 + rng.gauss(0, 0.1)) for _ in range(n)])
    return out


def test_regression_verdicts_on_synthetic_runs() -> None:
    rng = random.Random(7)
    baseline = _noisy_runs(rng, 20.0, 5)
    assert compare(_noisy_runs(rng, 30.0, 1)[0], baseline).verdict is Verdict.REGRESSED
    assert compare(_noisy_runs(rng, 12.0, 1)[0], baseline).verdict is Verdict.IMPROVED
    false_positives = sum(compare(run, baseline).verdict is not Verdict.UNCHANGED for run in _noisy_runs(rng, 20, 200))
    assert false_positives <= 2  # of 200 unchanged runs
    assert compare([20.0] * 8, baseline[:1]).verdict is Verdict.NO_BASELINE


def test_a_noisy_baseline_raises_the_bar() -> None:
    rng = random.Random(3)
    quiet = _noisy_runs(rng, 20.0, 5, run_sd=0.01)
    noisy = [
        [v * f for v in run]
        for run, f in zip(_noisy_runs(rng, 20.0, 5, run_sd=0.01), (0.8, 1.0, 1.2, 1.0, 0.9), strict=True)
    ]
    candidate = [26.0 + rng.gauss(0, 1) for _ in range(10)]  # +30 %
    assert compare(candidate, quiet).verdict is Verdict.REGRESSED
    result = compare(candidate, noisy)
    assert result.verdict is Verdict.INCONCLUSIVE  # a +30 % change hides in noise that wide
    assert result.threshold >= 0.4
    assert (
        compare([20.5] * 8, [[20.0] * 8] * 3, RegressionPolicy(min_effect=0.01)).verdict is Verdict.UNCHANGED
    )  # < 2 ms


def _levels(levels: tuple[float, ...], center: float = 20.0, n: int = 8) -> list[list[float]]:
    """Baseline runs whose medians sit at ``levels`` x center, with a little noise inside each run."""
    rng = random.Random(5)
    return [[center * level * (1 + rng.gauss(0, 0.02)) for _ in range(n)] for level in levels]


def test_the_band_is_a_prediction_interval_from_the_baselines_run_to_run_noise() -> None:
    for spread in (0.0, 0.05, 0.1):
        levels = (1 - spread, 1 - spread / 2, 1.0, 1 + spread / 2, 1 + spread)
        result = compare([20.0] * 8, _levels(levels))
        assert result.noise == pytest.approx(statistics.stdev(levels), abs=0.01)
        assert result.threshold == pytest.approx(max(0.15, T_995[3] * result.noise * math.sqrt(1 + 1 / 5)))
        assert result.verdict is Verdict.UNCHANGED, result.line()
    # Fewer runs say less about the spread: the same spread over 3 runs makes a wider band.
    assert (
        compare([20.0] * 8, _levels((0.95, 1.0, 1.05))).threshold
        > 2 * compare([20.0] * 8, _levels((0.95, 0.975, 1.0, 1.025, 1.05))).threshold
    )


def test_a_baseline_too_noisy_to_judge_gives_inconclusive_with_its_reason() -> None:
    noisy = _levels((0.7, 0.85, 1.0, 1.15, 1.3))  # 24 % sd run to run: a band of about 120 %
    result = compare([21.0 + 0.1 * i for i in range(8)], noisy)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.threshold > RegressionPolicy().max_band
    assert "vary by 24% (sd)" in result.reason
    assert "not judged" in result.reason
    assert result.reason in result.line()
    assert result.to_dict()["reason"] == result.reason
    # Well beyond even the wide band (+50 ms on 20 ms), a slowdown is still called.
    assert compare([70.0 + 0.1 * i for i in range(8)], noisy).verdict is Verdict.REGRESSED
    # The same candidate on a steadier baseline is judged.
    steady = _levels((0.96, 0.98, 1.0, 1.02, 1.04))
    assert compare([21.0 + 0.1 * i for i in range(8)], steady).verdict is Verdict.UNCHANGED
    assert compare([20.0] * 8, noisy, RegressionPolicy(max_band=2.0)).verdict is Verdict.UNCHANGED


def test_busy_machine_noise_gives_almost_no_false_regression() -> None:
    """Runs on a machine whose run level moves by 15 % (sd) from run to run: about 1 % of unchanged
    runs regressed (the old 2 x max-deviation band: 1.7 %, and 6 % with 3 baseline runs), and a
    run slowed by +50 ms (40 -> 90 ms) is regressed or inconclusive, hardly ever unchanged."""
    rng = random.Random(13)
    unchanged: Counter[Verdict] = Counter()
    slowed: Counter[Verdict] = Counter()
    for _ in range(500):
        baseline = _noisy_runs(rng, 40.0, 5, run_sd=0.15)
        unchanged[compare(_noisy_runs(rng, 40.0, 1, run_sd=0.15)[0], baseline).verdict] += 1
        slowed[compare(_noisy_runs(rng, 90.0, 1, run_sd=0.15)[0], baseline).verdict] += 1
    assert unchanged[Verdict.REGRESSED] <= 7, unchanged  # 1.4 %
    assert slowed[Verdict.REGRESSED] >= 400, slowed
    assert slowed[Verdict.UNCHANGED] + slowed[Verdict.IMPROVED] <= 3, slowed


def _record(run_id: str, created: str, p95s: list[float], accepted: bool = True, epoch: int = 0) -> RunRecord:
    return RunRecord(
        run_id, created, "promptcard", "abc", "smoke", "h1", "closed", 1, Machine("cpu", 2), {"count": 1}, p95s,
        "unchanged", accepted, epoch,
    )  # fmt: skip


def test_history_baseline_is_the_last_accepted_runs_of_the_current_epoch(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    key = ("promptcard", "h1", "closed", Machine("cpu", 2).fingerprint)
    for i in range(7):
        history.add(_record(f"r{i}", f"2026-01-0{i + 1}", [float(i)]))
    history.add(_record("slow", "2026-01-08", [99.0], accepted=False))
    assert [r.run_id for r in history.baseline(key, 5)] == ["r6", "r5", "r4", "r3", "r2"]
    history.add(_record("accepted", "2026-01-09", [50.0], epoch=1))
    assert [r.run_id for r in history.baseline(key, 5)] == ["accepted"]
    assert history.baseline(("promptcard", "h1", "closed", "other-machine"), 5) == []
    assert history.runs(1)[0].interval_p95 == [50.0]


def _report() -> LoadReport:
    samples = _samples("get", "read", [1.0, 2.0, 3.0])
    s = summarize(samples, 1)
    return LoadReport(
        "run", "promptcard", "abc", "https://localhost:1", profiles.get("smoke").to_dict(), "open", 1,
        "2026-01-01T00:00:00+00:00", 1.0, None, s, {"get": s}, {"read": s}, OpenLoopStats(3, 3, 0, 0.0, 10.0),
        [obj.ObjectiveBreach("get", "default", Metric.P95, 1.0, 3.0)], {"cores": 2},
    )  # fmt: skip


def test_report_files_follow_the_schema(tmp_path: Path) -> None:
    report = _report()
    samples = _samples("get", "read", [1.0, 2.0, 3.0])
    report.write(tmp_path, samples)
    data = json.loads((tmp_path / "report.json").read_text())
    validate(data)
    assert data["schema"] == "stackcheck.load/1"
    assert read_samples(tmp_path) == samples
    assert (tmp_path / "intervals.csv").read_text().startswith("second,rps,errors,p50_ms,p95_ms,p99_ms")
    with gzip.open(tmp_path / "samples.csv.gz", "rt") as gz:
        assert gz.readline().startswith("t_s,endpoint,group,latency_ms")
    with pytest.raises(ReportSchemaError, match=r"total\.count"):
        validate({**data, "total": {**data["total"], "count": "3"}})
    with pytest.raises(ReportSchemaError, match="schema"):
        validate({**data, "schema": "stackcheck.load/0"})


def test_locust_stays_out_of_the_library() -> None:
    import subprocess
    import sys

    code = "import sys, stackcheck.load, stackcheck.cli; print('locust' in sys.modules or 'gevent' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
