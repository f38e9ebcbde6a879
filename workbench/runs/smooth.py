"""Smoothing a noisy curve the way TensorBoard's slider does: an exponential moving average
whose first points are debiased (divided by 1 - weight^n), so the smoothed curve starts at the
data instead of being pulled towards 0. ``weight`` 0 is the raw curve; 0.99 is very smooth.
"""

from __future__ import annotations

import math

WEIGHTS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # the steps the panes' keys move through


def debiased_ema(values: list[float], weight: float) -> list[float]:
    """The smoothed curve of ``values``; a value that is not finite is kept as it is and left out
    of the average (as TensorBoard does)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight {weight!r} must be >= 0 and < 1")
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1.0 - weight) * v
        n += 1
        out.append(last / (1.0 - weight ** n) if weight else last)
    return out


def step(weight: float, direction: int) -> float:
    """The next weight of ``WEIGHTS`` up (direction 1) or down (-1) from ``weight``."""
    if direction > 0:
        return next((w for w in WEIGHTS if w > weight + 1e-9), WEIGHTS[-1])
    return next((w for w in reversed(WEIGHTS) if w < weight - 1e-9), WEIGHTS[0])


def robust_band(values: list[float], q: float = 0.05, pad: float = 0.1,
                min_points: int = 20) -> tuple[float, float] | None:
    """A y-range that ignores outliers (TensorBoard's "ignore outliers in chart scaling"): the
    ``q`` to ``1 - q`` quantile band of the finite ``values``, widened by ``pad`` of its height on
    each side; None when there are too few points to tell or nothing falls outside it."""
    ys = sorted(v for v in values if math.isfinite(v))
    if len(ys) < min_points:
        return None

    def quantile(p: float) -> float:
        i = p * (len(ys) - 1)
        lo = int(i)
        return ys[lo] + (ys[min(lo + 1, len(ys) - 1)] - ys[lo]) * (i - lo)

    lo, hi = quantile(q), quantile(1 - q)
    span = (hi - lo) or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad * span, hi + pad * span
    if ys[0] >= lo and ys[-1] <= hi:
        return None
    return lo, hi
