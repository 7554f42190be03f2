"""Means with 95% confidence intervals (Student's t over seeds), without scipy."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution; between tabulated df, interpolated
# linearly in 1/df (the standard table practice, accurate to ~1e-4).
_T975 = {
    1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 5: 2.5705818, 6: 2.4469119, 7: 2.3646243,
    8: 2.3060041, 9: 2.2621572, 10: 2.2281389, 11: 2.2009852, 12: 2.1788128, 13: 2.1603687, 14: 2.1447867,
    15: 2.1314495, 16: 2.1199053, 17: 2.1098156, 18: 2.1009220, 19: 2.0930241, 20: 2.0859634, 21: 2.0796138,
    22: 2.0738731, 23: 2.0686576, 24: 2.0638986, 25: 2.0595386, 26: 2.0555294, 27: 2.0518305, 28: 2.0484071,
    29: 2.0452296, 30: 2.0422725, 40: 2.0210754, 60: 2.0002978, 120: 1.9799304,
}  # fmt: skip
_Z975 = 1.9599640


def t_quantile_975(df: int) -> float:
    """t_{0.975} with ``df`` degrees of freedom (the half-width factor of a two-sided 95% interval)."""
    if df < 1:
        raise ValueError(f"Degrees of freedom must be at least 1, got {df}.")
    if df in _T975:
        return _T975[df]
    known = sorted(_T975) + [math.inf]
    hi = next(k for k in known if k > df)
    lo = max(k for k in known if k < df)
    t_lo, t_hi = _T975[lo], _T975.get(hi, _Z975)
    w = (1 / lo - 1 / df) / (1 / lo - (0 if hi == math.inf else 1 / hi))
    return t_lo + w * (t_hi - t_lo)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% confidence interval (t-distribution) of ``values``; with one value the interval is that value."""
    n = len(values)
    if n == 0:
        raise ValueError("No values to summarise.")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n, "values": list(values)}


def paired_difference(a: dict[Any, float], b: dict[Any, float]) -> dict[str, Any]:
    """Mean [95% interval] of a - b over the keys both have (seeds: the same shots and batches for both methods)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("No seed in common: a paired difference needs runs of both at the same seeds.")
    return mean_ci([a[k] - b[k] for k in common])


__all__ = ["latency_spread", "mean_ci", "paired_difference", "percentile", "t_quantile_975"]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_spread(ms: list[float]) -> dict[str, float]:
    """Median, 95th percentile and maximum of latencies in milliseconds, as ``p50_ms``, ``p95_ms``, ``max_ms``."""
    return {f"{k}_ms": round(percentile(ms, p), 1) for k, p in (("p50", 50), ("p95", 95), ("max", 100))}
