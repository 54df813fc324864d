"""Split thresholds for libraries that compare float32 values, as doubles our runtime and MLeap
compare with `x <= T`: one rule (float32 rounds to nearest, ties to even) for scikit-learn's
`float32(x) <= t` and XGBoost's `float32(x) < t32`, so a row goes the same way for every double.
"""

from __future__ import annotations

import numpy as np


def float32_floor(threshold: float) -> np.float32:
    """The largest float32 not above `threshold`."""
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def float32_below_as_double(t32: np.float32) -> float:
    """The largest double d with float32(d) < t32, so `x <= d` on doubles equals XGBoost's
    `float32(x) < t32`."""
    low = np.nextafter(np.float32(t32), np.float32(-np.inf))  # the largest float32 below t32
    middle = (float(low) + float(t32)) / 2  # exact in float64; the tie rounds to the even one
    return middle if np.float32(middle) == low else float(np.nextafter(middle, -np.inf))


def float32_at_most_as_double(threshold: float) -> float:
    """The largest double d with float32(d) <= threshold, so `x <= d` on doubles equals
    scikit-learn's `float32(x) <= threshold` (its trees compare float32 features with double
    thresholds)."""
    above = np.nextafter(float32_floor(threshold), np.float32(np.inf))
    if not np.isfinite(above):
        return float(threshold)
    return float32_below_as_double(above)
