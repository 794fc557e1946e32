"""Meters that turn an experiment into numbers.

RtoMeter: probes on a fixed schedule (open loop: a slow or hung probe never delays the next
one), each with its own timeout, on the monotonic clock. Every sample keeps the time the probe
was due and the time its answer (or its failure) arrived.

RTO = recovered_at - first_failure, where

- first_failure is the SCHEDULED time of the first probe that fails. The failure is only
  observable later for some outages (a refused probe fails at once, a hung or dropped one at its
  timeout), but the probe met the outage when it was sent: the outage began after the previous
  probe (one period earlier) got through, and no later than this probe's schedule plus its answer
  latency (a probe already under way when the outage began fails too). Taking the observation
  time instead would start hung and dropped outages one probe timeout late.
- recovered_at is the ARRIVAL time of the first answer of the first K consecutive successes
  (consecutive by schedule). An answer is proof the service is back and cannot arrive before the
  outage ended. Taking the schedule instead is wrong for hangs: a probe sent during a hang that
  the service answers as soon as it resumes would date the recovery up to one probe timeout
  early (the old rule measured frozen outages 220-280 ms short at a 250 ms timeout).

The edges per kind of outage (period P, answer latency d = arrival - schedule of a healthy probe):

- start, all kinds: late by at most P, early by at most d.
- end, all kinds: an answer arrives only after the outage ended, so the end is never early.
  Refused (connect fails at once) and dropped (packets lost): the first probe sent after the end
  answers, so the end is late by at most P + d (a dropped probe sent during the outage times out
  even when the outage ends first: its lost SYN is resent only after 1 s). Hung (connections
  accepted, nothing answered): requests queued in the hang are answered as soon as it ends, so
  the end is late only by the time to drain them (about d).

So rto_s is within -P ... +P + 2d of the truth for every kind (RtoResult.error_s); d is measured
(the median latency of the successful probes) and stated in every result.

WriteLedger: numbered writes whose acknowledgements are recorded; after recovery the surviving
writes are read back, and the difference is the data loss (RPO), in writes and in seconds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from stackcheck.background import BackgroundLoop
from stackcheck.waiting import wait_until

Probe = Callable[[float], bool]  # called with its timeout in seconds; True when the service answered correctly


@dataclass(frozen=True)
class ProbeSample:
    scheduled: float  # monotonic time the probe was due
    ok: bool
    arrived: float  # monotonic time its answer, or its failure, arrived

    @property
    def latency(self) -> float:
        """Seconds from due to answer: dispatch delay included, up to the timeout for a hang."""
        return self.arrived - self.scheduled


@dataclass(frozen=True)
class RtoResult:
    rto_s: float | None  # None: no outage seen, or not recovered
    resolution_s: float  # the probe period: each edge is found to within one period (see error_s)
    first_failure: float | None  # monotonic: when the first failed probe was due
    recovered_at: float | None  # monotonic: when the first of k consecutive answers arrived; None: not recovered
    failed_probes: int
    total_probes: int
    k: int
    answer_latency_s: float | None  # median latency of the successful probes; None: none succeeded
    failed_before: int = 0  # probes that failed of the host before the fault: not part of the outage

    @property
    def recovered(self) -> bool:
        return self.first_failure is None or self.recovered_at is not None

    @property
    def error_s(self) -> tuple[float, float]:
        """Bounds of rto_s minus the true outage: the start edge late by up to one period, the end
        edge late by up to one period plus the answer latency, the start early by up to it."""
        latency = self.answer_latency_s or 0.0
        return (-self.resolution_s, self.resolution_s + 2 * latency)

    def describe(self) -> str:
        low, high = self.error_s
        rule = (
            f"error {low * 1000:+.0f}/{high * 1000:+.0f} ms: from the schedule of the first failed probe"
            f" to the arrival of the first of {self.k} consecutive answers"
        )
        failed = f"{self.failed_probes}/{self.total_probes} probes failed"
        if self.first_failure is None:
            return f"no outage seen in {self.total_probes} probes (period {self.resolution_s * 1000:.0f} ms)"
        if self.rto_s is None:
            return f"NOT recovered: {failed} (period {self.resolution_s * 1000:.0f} ms)"
        return f"RTO {self.rto_s:.3f}s ({rule}; {failed})"


def compute_rto(
    samples: Iterable[ProbeSample], period: float, k: int, fault_start: float | None = None, in_flight_s: float = 0.0
) -> RtoResult:
    """RTO of the fault's outage: the first outage that had not recovered when the fault began.

    A probe due up to ``in_flight_s`` (its timeout) before ``fault_start`` can fail of the fault
    (it was still in flight when the fault began), so the outage may start that early. A failure
    before that window, and an outage that recovered before the fault began, are the host, not
    the fault (a loaded host, seen in primary-failover and LLM runs): counted in failed_before,
    never taken for the outage. Without ``fault_start`` the first outage is the one."""
    ordered = sorted(samples, key=lambda s: s.scheduled)
    start = None if fault_start is None else fault_start - in_flight_s
    early = [s for s in ordered if start is not None and s.scheduled < start]
    judged = ordered[len(early) :]
    first_failure = recovered_at = None
    i = blips = 0
    while i < len(judged):
        first = next((j for j in range(i, len(judged)) if not judged[j].ok), None)
        if first is None:
            break
        recovered_at, after = _recovery(judged, first, k)
        if recovered_at is None or fault_start is None or recovered_at >= fault_start:
            first_failure = judged[first].scheduled
            break
        blips += sum(not s.ok for s in judged[first:after])  # over before the fault began
        recovered_at, i = None, after
    rto = recovered_at - first_failure if first_failure is not None and recovered_at is not None else None
    latencies = [s.latency for s in ordered if s.ok]
    latency = statistics.median(latencies) if latencies else None
    failed = sum(not s.ok for s in judged) - blips
    failed_before = sum(not s.ok for s in early) + blips
    return RtoResult(rto, period, first_failure, recovered_at, failed, len(judged), k, latency, failed_before)


def _recovery(judged: list[ProbeSample], first: int, k: int) -> tuple[float | None, int]:
    """Arrival of the first of the first k consecutive answers after the failure at ``first``,
    and the index where that run starts; (None, len) when none."""
    for i in range(first + 1, len(judged) - k + 1):
        run = judged[i : i + k]
        if all(s.ok for s in run):
            return min(s.arrived for s in run), i
    return None, len(judged)


class RtoMeter:
    """Run ``probe`` every ``period`` seconds in the background while the block runs."""

    def __init__(self, probe: Probe, period: float = 0.05, probe_timeout: float = 0.25, k: int = 3) -> None:
        self.probe, self.period, self.probe_timeout, self.k = probe, period, probe_timeout, k
        self.samples: list[ProbeSample] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Enough workers that probes hung for probe_timeout never hold up the schedule.
        self._pool = ThreadPoolExecutor(max_workers=int(probe_timeout / period) + 4, thread_name_prefix="rto-probe")
        self._thread = threading.Thread(target=self._schedule, name="rto-meter", daemon=True)

    def _one(self, scheduled: float) -> None:
        try:
            ok = bool(self.probe(self.probe_timeout))
        except Exception:
            ok = False
        sample = ProbeSample(scheduled, ok, time.monotonic())
        with self._lock:
            self.samples.append(sample)

    def _schedule(self) -> None:
        origin = time.monotonic()
        pending: list[Future[None]] = []
        for i in range(10**9):
            due = origin + i * self.period
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._stop.is_set():
                break
            pending.append(self._pool.submit(self._one, due))
        for future in pending:
            future.result()

    def __enter__(self) -> RtoMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def wait_for_recovery(self, timeout_s: float, fault_start: float | None = None) -> bool:
        """Block until K probes in a row succeeded after the fault's outage (or timeout); True when recovered."""
        recovered = wait_until(lambda: self.result(fault_start).recovered_at, timeout_s, interval_s=self.period)
        return recovered is not None

    def result(self, fault_start: float | None = None) -> RtoResult:
        """The RTO of the fault that began at ``fault_start`` (monotonic); a probe in flight then
        (due up to one probe timeout earlier) can have met it."""
        with self._lock:
            samples = list(self.samples)
        return compute_rto(samples, self.period, self.k, fault_start, self.probe_timeout)


# -- RPO ------------------------------------------------------------------------------------------

Writer = Callable[[int], None]  # performs write number n; returns when acknowledged, raises when not


@dataclass(frozen=True)
class LedgerReport:
    attempted: int
    acknowledged: int
    lost: tuple[int, ...]  # acknowledged, then missing after recovery
    unexpected: tuple[int, ...]  # present although never acknowledged (e.g. committed, answer lost)
    duplicates: tuple[int, ...]
    rpo_s: float  # last surviving acknowledged write -> last lost acknowledged write
    rpo_writes: int

    def describe(self) -> str:
        lost = f"lost {len(self.lost)} acknowledged writes" + (f" ({_ranges(self.lost)})" if self.lost else "")
        extra = f", {len(self.unexpected)} unacknowledged writes survived" if self.unexpected else ""
        dup = f", {len(self.duplicates)} duplicated" if self.duplicates else ""
        return f"{self.acknowledged}/{self.attempted} writes acknowledged; {lost}{extra}{dup}; RPO {self.rpo_s:.3f}s"


def spans(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Ledger numbers as runs of consecutive ones, (first, last) each: what a message lists."""
    runs: list[list[int]] = []
    for n in sorted(ids):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(a, b) for a, b in runs]


def _ranges(ids: Iterable[int]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans(ids))


@dataclass
class WriteLedger(BackgroundLoop):
    """Issue numbered writes (every ``interval_s`` in a background thread while the ``with`` block
    runs, or one by one with ``write``)."""

    writer: Writer
    interval_s: float = 0.02
    acks: dict[int, float] = field(default_factory=dict)  # write number -> monotonic ack time
    attempted: int = 0

    def write(self) -> bool:
        number = self.attempted + 1
        self.attempted = number
        try:
            self.writer(number)
        except Exception:
            return False
        self.acks[number] = time.monotonic()
        return True

    def tick(self) -> None:
        self.write()

    def acked_between(self, start: float, end: float) -> set[int]:
        return {n for n, t in self.acks.items() if start <= t <= end}

    def reconcile(self, surviving: Iterable[int]) -> LedgerReport:
        found = list(surviving)
        present = set(found)
        duplicates = tuple(sorted({n for n in present if found.count(n) > 1}))
        acked = set(self.acks)
        lost = tuple(sorted(acked - present))
        unexpected = tuple(sorted(present - acked))
        rpo_s = 0.0
        if lost:
            first_lost = min(lost)
            before = [self.acks[n] for n in acked & present if n < first_lost]
            reference = max(before) if before else self.acks[first_lost]
            rpo_s = max(self.acks[n] for n in lost) - reference
        return LedgerReport(self.attempted, len(acked), lost, unexpected, duplicates, rpo_s, len(lost))
