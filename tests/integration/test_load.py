"""Load runs prove their numbers on the reference stack (session stack, toxics always removed).

* +200 ms on backend->postgres-primary (Toxiproxy latency, downstream, no jitter) delays every
  round trip to the primary by 200 ms. A write endpoint (update, delete, test-case create) makes
  6 round trips on a warm pooled connection - BEGIN, the statement, COMMIT, then BEGIN,
  pg_current_wal_lsn(), COMMIT - and a 7th (the pool's liveness ping) on a connection idle for
  more than 1 s. So its p50 must rise by 6 x 200 ms +- TOLERANCE_MS, and its p95 by at least
  that: the tail adds whole round trips (the ping) and waits behind slowed pooled connections,
  so its rise is not one fixed multiple. Endpoints served by the replica or Redis must not move
  by more than TOLERANCE_MS.
* Reported percentiles equal those recomputed from the raw samples, and the HdrHistogram's
  agree within 1 %.
* On a busy machine (the session stack serving traffic meanwhile, as on a shared CI host), five
  unchanged runs are never flagged (``unchanged``, or ``inconclusive`` when the baseline turned
  out too noisy to judge); a run slowed by +50 ms per primary round trip is flagged ``regressed``.
* Open loop against a slowed target reports late and unsent requests.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stackcheck.chaos.workloads import Traffic
from stackcheck.load import History, LoadReport, LoadRun, Mode, RegressionPolicy, Verdict, percentile, profiles
from stackcheck.load.report import read_samples
from stackcheck.load.stats import decode_histogram
from stackcheck.stack import Stack

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.exclusive("load runs and toxics on the shared session stack"),
]

PRIMARY = "backend->postgres-primary"
PER_ROUND_TRIP_MS = 200.0
TOLERANCE_MS = 60.0
WRITES = ("update", "delete", "test-case-create")
OFF_PRIMARY = ("list", "filter", "search", "health")


@contextlib.contextmanager
def primary_latency(stack: Stack, ms: int) -> Iterator[None]:
    stack.toxiproxy.add_toxic(PRIMARY, "load-test-latency", "latency", {"latency": ms, "jitter": 0})
    try:
        yield
    finally:
        stack.toxiproxy.remove_toxic(PRIMARY, "load-test-latency")


def busy_request(client: httpx.Client, n: int) -> httpx.Response:
    """Background load for a busy machine: mostly reads (cache, replica), every 4th a write."""
    if n % 4 == 0:
        card = {"title": f"stackcheck traffic {n}", "prompt": "p", "category": "stackcheck-traffic"}
        return client.post("/api/prompt-cards", json=card)
    return client.get("/api/prompt-cards", params={"page_size": 10})


def run(stack: Stack, tmp: Path, seconds: float, **kwargs: object) -> LoadReport:
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("abort_after_s", 0)  # these runs break objectives on purpose
    kwargs.setdefault("progress", None)
    profile = profiles.get("smoke").with_duration(seconds)
    return LoadRun.for_stack(stack, profile, reports_dir=tmp, **kwargs).run()  # type: ignore[arg-type]


def test_injected_latency_moves_db_bound_percentiles_by_200ms_per_round_trip(stack: Stack, tmp_path: Path) -> None:
    run(stack, tmp_path, 6)  # warm-up: pools, caches, JIT-free but cold page cache
    before = run(stack, tmp_path, 10)
    with primary_latency(stack, int(PER_ROUND_TRIP_MS)):
        after = run(stack, tmp_path, 12)
    lines = []
    for endpoint in (*WRITES, *OFF_PRIMARY):
        a, b = before.endpoints[endpoint], after.endpoints[endpoint]
        lines.append(f"{endpoint}: p50 {b.p(50) - a.p(50):+.1f} ms, p95 {b.p(95) - a.p(95):+.1f} ms")
    print("\n".join(lines))
    for endpoint in WRITES:
        a, b = before.endpoints[endpoint], after.endpoints[endpoint]
        # 6 round trips, or 7 when the median request found its pooled connection idle > 1 s.
        trips = round((b.p(50) - a.p(50)) / PER_ROUND_TRIP_MS)
        assert trips in (6, 7), lines
        assert abs(b.p(50) - a.p(50) - trips * PER_ROUND_TRIP_MS) <= TOLERANCE_MS, lines
        assert b.p(95) - a.p(95) >= 6 * PER_ROUND_TRIP_MS - TOLERANCE_MS, lines
    for endpoint in OFF_PRIMARY:
        assert after.endpoints[endpoint].p(50) - before.endpoints[endpoint].p(50) <= TOLERANCE_MS, lines


def test_reported_percentiles_agree_with_the_raw_samples(stack: Stack, tmp_path: Path) -> None:
    report = run(stack, tmp_path, 8)
    directory = tmp_path / report.run_id / "load"
    data = json.loads((directory / "report.json").read_text())
    samples = read_samples(directory)
    assert len(samples) == data["total"]["count"] > 100
    ordered = sorted(s.latency_ms for s in samples)
    hist = {
        name: decode_histogram(encoded)
        for name, encoded in (line.split("\t") for line in (directory / "histogram.hdr").read_text().splitlines())
    }
    for q in (50, 90, 95, 99, 99.9):
        reported = data["total"]["percentiles_ms"][f"p{q:g}"]
        assert reported == pytest.approx(percentile(ordered, q), rel=0.01)
        # hdrh rounds the rank (int(q*n/100 + 0.5)) where we take ceil(q*n/100): ask for our rank.
        rank = math.ceil(q / 100 * len(ordered))
        assert hist["total"].get_value_at_percentile(100 * rank / len(ordered)) / 1000 == pytest.approx(
            reported, rel=0.01
        )
    for endpoint, summary in data["endpoints"].items():
        values = sorted(s.latency_ms for s in samples if s.endpoint == endpoint)
        assert summary["percentiles_ms"]["p95"] == pytest.approx(percentile(values, 95), rel=0.01)
    assert (directory / "intervals.csv").read_text().count("\n") >= 8


def test_regression_check_on_a_busy_machine_flags_a_slowed_stack_and_never_an_unchanged_one(
    fresh_stack: Stack, stack: Stack, tmp_path: Path
) -> None:
    # A stack of its own: the session stack carries the tables and vacuum debt of earlier tests,
    # and a drift in the system under test is exactly what this check is built to report. The
    # session stack keeps the machine busy all along (its healthchecks, and 4 clients reading and
    # writing through its edge): the verdict must cope with that noise, not be spared it.
    with Traffic(stack, busy_request, concurrency=4, max_s=900) as background:
        started = time.monotonic()
        history = History(tmp_path / "history.sqlite")
        policy = RegressionPolicy()
        # A full baseline (5 runs), every one accepted: with only the minimum of 3 the spread is
        # known so poorly that the band is 11x the sd (t with 2 degrees of freedom), here > 150 %.
        building = RegressionPolicy(min_baseline_runs=policy.baseline_runs)
        for _ in range(2):  # warm-up, not recorded: buffers, pools and caches of a fresh stack fill up
            run(fresh_stack, tmp_path, 9)
        for _ in range(policy.baseline_runs):
            baseline = run(fresh_stack, tmp_path, 9, history=history, regression_policy=building).regression
            assert baseline is not None
            assert baseline.verdict is Verdict.NO_BASELINE
        unchanged = [run(fresh_stack, tmp_path, 9, history=history, regression_policy=policy) for _ in range(5)]
        with primary_latency(fresh_stack, 50):
            slowed = run(fresh_stack, tmp_path, 9, history=history, regression_policy=policy).regression
        busy = background.window(started)
    verdicts = [r.regression for r in unchanged if r.regression is not None]
    print(f"background: {busy.describe()}\n" + "\n".join(r.line() for r in verdicts))
    assert busy.count > 20 * len(unchanged), f"the machine was not kept busy: {busy.describe()}"
    assert len(verdicts) == 5
    assert {r.verdict for r in verdicts} <= {Verdict.UNCHANGED, Verdict.INCONCLUSIVE}, [r.line() for r in verdicts]
    assert all(r.reason for r in verdicts if r.verdict is Verdict.INCONCLUSIVE)
    assert slowed is not None
    print(slowed.line())
    assert slowed.verdict is Verdict.REGRESSED
    latest = history.runs(1)[0]
    assert latest.verdict == "regressed"
    assert not latest.accepted  # a regression never joins the baseline


def test_open_loop_reports_late_and_unsent_requests_when_the_target_slows(stack: Stack, tmp_path: Path) -> None:
    healthy = run(stack, tmp_path, 8, mode=Mode.OPEN, max_inflight=4)
    assert healthy.open_loop is not None
    with primary_latency(stack, 200):
        slowed = run(stack, tmp_path, 8, mode=Mode.OPEN, max_inflight=4)
    ol = slowed.open_loop
    assert ol is not None
    print(f"healthy: {healthy.open_loop.to_dict()}\nslowed: {ol.to_dict()}")
    assert healthy.open_loop.unsent <= healthy.open_loop.scheduled * 0.05
    assert ol.unsent > ol.scheduled * 0.3
    assert ol.late > 0
    assert ol.max_late_ms > 1000
    # Measured from the intended send time, waiting for a free sender counts as latency.
    service = [s for s in read_samples(tmp_path / slowed.run_id / "load") if s.late_ms > 0]
    assert max(s.latency_ms - s.late_ms for s in service) < slowed.total.max_ms


def test_history_in_postgresql(stack: Stack) -> None:
    env = stack._rendered_env("postgres-primary")
    port = stack.service("postgres-primary").port(5432)
    url = f"postgresql://postgres:{env['POSTGRES_PASSWORD']}@127.0.0.1:{port}/{env['POSTGRES_DB']}"
    from tests.unit.test_load import _record

    history = History(url)
    history.add(_record("pg-1", "2026-01-01", [1.0, 2.0]))
    key = ("promptcard", "h1", "closed", "4a4c7e5b0c0e")
    assert history.runs(1)[0].run_id == "pg-1"
    assert history.baseline(key, 5) == []  # another machine's fingerprint
