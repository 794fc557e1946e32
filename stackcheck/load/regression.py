"""Noise-aware regression check of one run against a baseline of comparable runs.

The data are per-1 s interval p95s. A run is ``regressed`` (or ``improved``) only when all hold:

* Mann-Whitney U (two-sided, normal approximation with tie correction) between the run's
  intervals and the baseline runs' pooled intervals gives p < ``alpha``;
* the relative change of the median interval p95 is outside the band: ``min_effect``, or wider,
  the 99 % prediction interval of one more run's median given the baseline runs' medians
  (Student t with k - 1 degrees of freedom x their relative standard deviation x sqrt(1 + 1/k));
* the absolute change exceeds ``min_effect_ms`` (2 ms -> 3 ms is +50 % but no regression).

Intervals within a run are correlated and runs differ by more than intervals do, so the
p-value alone over-rejects on a shared machine: the run-to-run spread is what guards against it,
and the t factor accounts for how little a few runs say about that spread (a max-deviation band
of 2x, used before, let 4.5-7 % of unchanged runs through as regressed with 3 baseline runs at
10-25 % run-to-run noise; this band, about 1 %). When the band must be wider than ``max_band``
(a busy CI host, other stacks serving traffic), a change inside it is ``inconclusive``, never
``unchanged``: a baseline that noisy could not have seen a regression of that size. A change
beyond even the wide band is still called.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

# Two-sided 99 % Student t quantiles (0.995) by degrees of freedom; the normal's beyond the table.
T_995 = (63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169, 3.106, 3.055, 3.012, 2.977, 2.947)
Z_995 = 2.576


class Verdict(Enum):
    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    NO_BASELINE = "no-baseline"  # fewer comparable baseline runs than needed: nothing to compare with
    INCONCLUSIVE = "inconclusive"  # the baseline is too noisy to vouch for "unchanged": judged nothing


@dataclass(frozen=True)
class RegressionPolicy:
    baseline_runs: int = 5  # the last N comparable accepted runs
    min_baseline_runs: int = 3  # the run-to-run noise estimate needs at least 3 runs to mean anything
    alpha: float = 0.01
    min_effect: float = 0.15
    min_effect_ms: float = 2.0
    max_band: float = 0.5  # the widest band (relative change) within which "unchanged" still means something


@dataclass(frozen=True)
class RegressionResult:
    verdict: Verdict
    baseline_runs: int
    p_value: float
    effect: float  # relative change of the median interval p95 (0.25 = 25 % slower)
    effect_ms: float
    cliffs_delta: float  # P(run > baseline) - P(run < baseline), from U
    noise: float  # baseline run-to-run spread: standard deviation of the run medians / their mean
    threshold: float  # the band: the relative effect needed to call a change
    reason: str = ""  # why nothing was judged (no-baseline, inconclusive)

    def line(self) -> str:
        if self.verdict is Verdict.NO_BASELINE:
            return f"no-baseline: {self.reason}"
        text = (
            f"{self.verdict.value}: median interval p95 {self.effect:+.1%} ({self.effect_ms:+.1f} ms), "
            f"Cliff's delta {self.cliffs_delta:+.2f}, Mann-Whitney p={self.p_value:.2g} vs {self.baseline_runs} "
            f"baseline runs; machine noise {self.noise:.1%} run-to-run, threshold {self.threshold:.1%}"
        )
        return f"{text}; {self.reason}" if self.reason else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "baseline_runs": self.baseline_runs,
            "p_value": self.p_value,
            "effect": self.effect,
            "effect_ms": self.effect_ms,
            "cliffs_delta": self.cliffs_delta,
            "noise": self.noise,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of a, two-sided p-value) by the normal approximation with tie and continuity correction."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return math.nan, 1.0
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    rank_sum_a = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u = rank_sum_a - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def compare(
    candidate: Sequence[float], baseline: Sequence[Sequence[float]], policy: RegressionPolicy = RegressionPolicy()
) -> RegressionResult:
    """Judge ``candidate`` (interval p95s of this run) against baseline runs' interval p95s."""
    runs = [[v for v in run if not math.isnan(v)] for run in baseline]
    runs = [run for run in runs if run]
    cand = [v for v in candidate if not math.isnan(v)]
    if len(runs) < max(2, policy.min_baseline_runs) or not cand:  # a spread needs two runs at least
        why = (
            f"{len(runs)} comparable run(s) in history, {policy.min_baseline_runs} needed; this run joins the baseline"
        )
        return RegressionResult(Verdict.NO_BASELINE, len(runs), 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, why)
    pooled = [v for run in runs for v in run]
    u, p = mann_whitney(cand, pooled)
    base_median = statistics.median(pooled)
    cand_median = statistics.median(cand)
    effect_ms = cand_median - base_median
    effect = effect_ms / base_median if base_median > 0 else math.inf
    medians = [statistics.median(run) for run in runs]
    center = statistics.mean(medians)
    noise = statistics.stdev(medians) / center if center > 0 else 0.0
    k = len(runs)
    t = T_995[k - 2] if k - 2 < len(T_995) else Z_995
    threshold = max(policy.min_effect, t * noise * math.sqrt(1 + 1 / k))
    verdict, reason = Verdict.UNCHANGED, ""
    if p < policy.alpha and abs(effect) > threshold and abs(effect_ms) > policy.min_effect_ms:
        verdict = Verdict.REGRESSED if effect > 0 else Verdict.IMPROVED
    elif threshold > policy.max_band:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"the baseline runs' medians vary by {noise:.0%} (sd) from run to run, so only a change beyond "
            f"{threshold:.0%} can be told from noise (max_band {policy.max_band:.0%}): not judged; "
            "rerun on a quieter machine or record a steadier baseline"
        )
    cliffs = 2 * u / (len(cand) * len(pooled)) - 1
    return RegressionResult(verdict, len(runs), p, effect, effect_ms, cliffs, noise, threshold, reason)
