"""Score distributions: the reference a model keeps from training, and drift against it.

The reference splits the validation scores into (up to) ten bins of equal count; a later run's
scores are binned at the same edges and compared with the population stability index,
PSI = sum((actual - expected) * ln(actual / expected)). Rules of thumb: below 0.1 stable,
0.1-0.25 worth a look, above 0.25 a shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FLOOR = 1e-4  # share given to an empty bin, so the logarithm stays finite


def reference_distribution(scores: np.ndarray) -> dict[str, Any]:
    """Bin edges and shares of `scores`, plus summary figures, as stored with a model version."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no scores to build a reference distribution from")
    inner = np.unique(np.quantile(scores, np.linspace(0, 1, BINS + 1)[1:-1]))
    return {
        "edges": inner.tolist(),  # bins: (-inf, e0], (e0, e1], ..., (e_last, inf)
        "shares": bin_shares(scores, inner).tolist(),
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(scores, q)) for q in QUANTILES},
    }


def bin_shares(scores: np.ndarray, edges: np.ndarray | list[float]) -> np.ndarray:
    counts = np.bincount(
        np.searchsorted(np.asarray(edges), scores, side="left"), minlength=len(edges) + 1
    )
    return counts / max(int(counts.sum()), 1)


def psi(reference: dict[str, Any], scores: np.ndarray) -> float:
    """Population stability index of `scores` against a stored reference distribution."""
    expected = np.maximum(np.asarray(reference["shares"], dtype=np.float64), FLOOR)
    actual = np.maximum(bin_shares(np.asarray(scores, np.float64), reference["edges"]), FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
