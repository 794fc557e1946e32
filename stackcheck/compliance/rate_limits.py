"""Rate limits, measured: requests are sent on a fixed schedule (open loop, loopback only,
bounded in time) and the answers counted, so the report states the rate the edge really allows."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.target import HttpTarget


@dataclass(frozen=True)
class Shot:
    sent_at: float  # seconds since the first scheduled send
    status: int  # 0: the request failed without an HTTP answer (see failure)
    elapsed: float = 0.0  # seconds from send to the full answer (or the failure)
    failure: str = ""  # "timeout", "reset" (closed without an answer) or the error's type

    @property
    def answer(self) -> str:
        return str(self.status) if self.status else self.failure


def _failure(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "reset"
    return type(exc).__name__


def drive(target: HttpTarget, path: str, offered_rate: float, seconds: float, timeout: float = 10.0) -> list[Shot]:
    """GET path at offered_rate for seconds; requests run concurrently so slow answers do not delay the schedule."""
    count = int(offered_rate * seconds)
    interval = 1.0 / offered_rate
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with target.http(timeout=timeout, limits=limits) as client, ThreadPoolExecutor(max_workers=64) as pool:

        def one(offset: float) -> Shot:
            started = time.monotonic()
            try:
                status = client.get(path).status_code
            except httpx.HTTPError as exc:
                return Shot(offset, 0, time.monotonic() - started, _failure(exc))
            return Shot(offset, status, time.monotonic() - started)

        start = time.monotonic()
        futures = []
        for i in range(count):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i * interval))
        return [f.result() for f in futures]


@dataclass(frozen=True)
class Measurement:
    sent: int
    allowed: int
    limited: int
    other: dict[int, int]
    sustained_rate: float  # allowed per second once the burst is used up
    window: tuple[float, float]

    def describe(self) -> str:
        others = f", other {self.other}" if self.other else ""
        return (
            f"sent {self.sent}, allowed {self.allowed}, limited {self.limited}{others}; "
            f"sustained {self.sustained_rate:.2f} r/s measured over {self.window[0]:.1f}-{self.window[1]:.1f}s"
        )


def measure(
    shots: list[Shot], limit_status: int, rate: float, burst: int, offered: float, seconds: float
) -> Measurement:
    # The burst is spent after burst / (offered - rate) seconds; measure from a little later.
    begin = min(seconds / 2, burst / max(offered - rate, 1e-9) + 0.5)
    allowed = [s for s in shots if s.status != limit_status and 200 <= s.status < 500]
    in_window = [s for s in allowed if s.sent_at >= begin]
    other: dict[int, int] = {}
    for s in shots:
        if s.status != limit_status and not 200 <= s.status < 500:
            other[s.status] = other.get(s.status, 0) + 1
    return Measurement(
        sent=len(shots),
        allowed=len(allowed),
        limited=sum(s.status == limit_status for s in shots),
        other=other,
        sustained_rate=len(in_window) / (seconds - begin),
        window=(begin, seconds),
    )


def refill_s(rule: Rule) -> float:
    """Seconds a drained limiter of ``rule`` needs to be full again: its burst at its rate, plus
    0.5 s for the edge's clock and the answers still in flight."""
    return float(rule.param("burst") / rule.param("rate") + 0.5)


def _settle(rule: Rule) -> None:
    """Let the limiter's bucket refill completely, so earlier traffic does not bias the count."""
    time.sleep(refill_s(rule))


def _limit_verdict(rule: Rule, ctx: CheckContext) -> list[Result]:
    if not rule.param("path"):
        raise not_applicable(
            rule,
            'no rate-limited route is configured (path = "")',
            f'set [rules.{rule.id}] path = "/..." in the policy',
        )
    rate, burst, offered, seconds = (
        rule.param("rate"),
        rule.param("burst"),
        rule.param("offered_rate"),
        rule.param("seconds"),
    )
    _settle(rule)
    shots = drive(ctx.http_target(), rule.param("path"), offered, seconds)
    m = measure(shots, rule.param("status"), rate, burst, offered, seconds)
    low, high = rate * (1 - rule.param("tolerance")), rate * (1 + rule.param("tolerance"))
    if m.limited == 0:
        problem = f"no request was answered {rule.param('status')} at {offered:g} r/s (limit {rate:g} r/s)"
    elif not low <= m.sustained_rate <= high:
        problem = f"sustained allowed rate {m.sustained_rate:.2f} r/s is outside {low:.2f}-{high:.2f} r/s"
    elif m.other:
        problem = f"unexpected answers {m.other}"
    else:
        problem = None
    evidence = f"{m.describe()}; policy {rate:g} r/s burst {burst}"
    subject = f"GET {rule.param('path')} at {offered:g} r/s for {seconds:g}s"
    return [
        Result(
            rule, Outcome.FAIL if problem else Outcome.PASS, subject, f"{problem}: {evidence}" if problem else evidence
        )
    ]


@check("ratelimit-api")
def api_limit(rule: Rule, ctx: CheckContext) -> list[Result]:
    return _limit_verdict(rule, ctx)


@check("ratelimit-auth")
def auth_limit(rule: Rule, ctx: CheckContext) -> list[Result]:
    return _limit_verdict(rule, ctx)


def probe_answer(shot: Shot, timeout: float) -> str:
    """How a health probe answered: its status, "late" past the timeout, or how it failed."""
    return f"{shot.answer} late" if shot.status and shot.elapsed > timeout else shot.answer


def health_problem(shots: list[Shot], timeout: float) -> str | None:
    """Every probe must answer 2xx within ``timeout``; otherwise what was seen, counted per answer."""
    if not shots:
        return "no probe was sent (offered_rate * seconds < 1)"
    counts = Counter(probe_answer(s, timeout) for s in shots)
    bad = sum(n for answer, n in counts.items() if not (answer.isdigit() and 200 <= int(answer) < 300))
    if not bad:
        return None
    seen = ", ".join(f"{answer}: {n}" for answer, n in sorted(counts.items()))
    return f"{bad} of {len(shots)} probes did not answer 2xx within {timeout:g}s ({seen})"


@check("ratelimit-health-unlimited")
def health_unlimited(rule: Rule, ctx: CheckContext) -> list[Result]:
    offered, seconds, timeout = rule.param("offered_rate"), rule.param("seconds"), rule.param("timeout_s")
    paths = rule.param("paths")
    if not paths:
        raise not_applicable(
            rule,
            "the rule lists no health route (paths = [])",
            f'set [rules.{rule.id}] paths = ["/health"] in the policy',
        )
    out = []
    for path in paths:
        shots = drive(ctx.http_target(), path, offered, seconds, timeout=timeout)
        problem = health_problem(shots, timeout)
        slowest = max((s.elapsed for s in shots), default=0.0)
        evidence = f"{len(shots)} probes at {offered:g} r/s, all 2xx within {timeout:g}s (slowest {slowest:.2f}s)"
        out.append(Result(rule, Outcome.FAIL if problem else Outcome.PASS, f"GET {path}", problem or evidence))
    return out
