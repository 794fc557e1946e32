"""The one percentile definition every stackcheck measurement uses (load runs, liveness, chaos
traffic windows): nearest rank, the value at rank ceil(q/100 * n), so it is exact, not bucketed."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; NaN for none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
