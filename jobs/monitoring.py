"""Score distributions: the reference a model keeps from training, and drift against it.

The reference splits the validation scores into (up to) ten bins of equal count; a later run's
scores are binned at the same edges and compared with the population stability index,
PSI = sum((actual - expected) * ln(actual / expected)). Rules of thumb: below 0.1 stable,
0.1-0.25 worth a look, above 0.25 a shift.

A multiclass model's score is the probability of its predicted class; its drift is also
measured per class: each class's probability in CLASS_BINS equal bins over [0, 1] (fixed bins,
so every class compares alike), and the share of rows predicted as each class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FLOOR = 1e-4  # share given to an empty bin, so the logarithm stays finite
HISTOGRAM_BINS = 20
QUANTILE_ACCURACY = 10_000  # percentile_approx: relative error about 1/10,000
CLASS_BINS = 10

Metrics = dict[str, tuple[float | None, Any]]  # name -> (value, detail), as run_metrics holds


def reference_distribution(
    scores: np.ndarray,
    class_probabilities: np.ndarray | None = None,
    classes: Sequence[str] = (),
) -> dict[str, Any]:
    """Bin edges and shares of `scores`, plus summary figures, as stored with a model version.
    For a multiclass model, `class_probabilities` (rows x classes, in the order of `classes`)
    add each class's reference (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no scores to build a reference distribution from")
    inner = np.unique(np.quantile(scores, np.linspace(0, 1, BINS + 1)[1:-1]))
    per_class = {}
    if class_probabilities is not None:
        matrix = np.asarray(class_probabilities, dtype=np.float64)
        predicted = np.bincount(np.argmax(matrix, axis=1), minlength=len(classes)) / len(matrix)
        per_class = {
            "classes": {
                name: {
                    "shares": class_bin_shares(matrix[:, k]).tolist(),
                    "predicted_share": float(predicted[k]),
                }
                for k, name in enumerate(classes)
            }
        }
    return per_class | {
        "edges": inner.tolist(),  # bins: (-inf, e0], (e0, e1], ..., (e_last, inf)
        "shares": bin_shares(scores, inner).tolist(),
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(scores, q)) for q in QUANTILES},
    }


def class_bin_shares(probabilities: np.ndarray) -> np.ndarray:
    """Shares of probabilities in CLASS_BINS equal bins over [0, 1] (1.0 in the last)."""
    bins = np.minimum((np.asarray(probabilities) * CLASS_BINS).astype(np.int64), CLASS_BINS - 1)
    return np.bincount(bins, minlength=CLASS_BINS) / max(len(bins), 1)


def bin_shares(scores: np.ndarray, edges: np.ndarray | list[float]) -> np.ndarray:
    counts = np.bincount(
        np.searchsorted(np.asarray(edges), scores, side="left"), minlength=len(edges) + 1
    )
    return counts / max(int(counts.sum()), 1)


def psi(reference: dict[str, Any], scores: np.ndarray) -> float:
    """Population stability index of `scores` against a stored reference distribution."""
    actual = bin_shares(np.asarray(scores, np.float64), reference["edges"])
    return psi_of_shares(reference["shares"], actual)


def psi_of_shares(expected: Any, actual: Any) -> float:
    """PSI between two sets of bin shares over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def run_metrics(scores: DataFrame, task: str, reference: dict[str, Any] | None) -> Metrics:
    """A run's score distribution (and drift, given a reference), computed where the rows are.

    Two Spark passes over the `score` column: summary figures and quantiles, then one
    grouping that fills both the histogram and the reference's bins.
    """
    from pyspark.sql import functions as F  # pyspark is heavy: only when a job runs

    score = F.col("score")
    count, mean, std, low, high, quantiles = scores.agg(
        F.count(score),
        F.mean(score),
        F.stddev_pop(score),
        F.min(score),
        F.max(score),
        F.percentile_approx(score, list(QUANTILES), QUANTILE_ACCURACY),
    ).first()  # type: ignore[misc]
    metrics: Metrics = {"score_count": (float(count), None)}
    if count == 0:
        return metrics
    metrics["score_mean"] = (float(mean), None)
    metrics["score_std"] = (float(std), None)
    metrics["score_quantiles"] = (
        None,
        {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
    )
    # Probabilities get fixed bins over [0, 1], so runs compare bin by bin; a regressor's
    # histogram spans the run's own range.
    low, high = (0.0, 1.0) if task == "classification" else (float(low), float(high))
    width = (high - low) / HISTOGRAM_BINS or 1.0
    histogram_bin = F.least(
        F.greatest(F.floor((score - F.lit(low)) / F.lit(width)), F.lit(0)),
        F.lit(HISTOGRAM_BINS - 1),
    ).cast("int")
    edges = list(reference["edges"]) if reference else []
    # The reference bin is the number of edges below the score, as np.searchsorted(side=left).
    reference_bin = sum(((score > F.lit(edge)).cast("int") for edge in edges), F.lit(0))
    counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    reference_counts = np.zeros(len(edges) + 1, dtype=np.int64)
    for h, r, n in (
        scores.groupBy(histogram_bin.alias("h"), reference_bin.alias("r")).count().collect()
    ):
        counts[h] += n
        reference_counts[r] += n
    metrics["score_histogram"] = (
        None,
        {
            "edges": [low + width * i for i in range(HISTOGRAM_BINS + 1)],
            "counts": counts.tolist(),
        },
    )
    if reference:
        actual = reference_counts / reference_counts.sum()
        metrics["psi"] = (
            psi_of_shares(reference["shares"], actual),
            {"edges": edges, "expected": reference["shares"], "actual": actual.tolist()},
        )
    if reference and "classes" in reference:
        metrics.update(_class_drift(scores, reference["classes"]))
    return metrics


def _class_drift(scores: DataFrame, reference: dict[str, Any]) -> Metrics:
    """Per class: PSI of its probability and its predicted share against training. One
    grouping over (class, bin) of the exploded probabilities, one over the labels."""
    from pyspark.sql import functions as F  # pyspark is heavy: only when a job runs

    pairs = scores.select(F.explode("probabilities").alias("class", "p"))
    bin_of = F.least(F.floor(F.col("p") * CLASS_BINS), F.lit(CLASS_BINS - 1)).cast("int")
    counts = {name: np.zeros(CLASS_BINS, np.int64) for name in reference}
    for name, b, n in pairs.groupBy("class", bin_of.alias("b")).count().collect():
        if name in counts:
            counts[name][b] += n
    labels = {r["label"]: r["count"] for r in scores.groupBy("label").count().collect()}
    rows = max(sum(labels.values()), 1)
    psi_by_class, shares = {}, {}
    for name, expected in reference.items():
        actual = counts[name] / max(int(counts[name].sum()), 1)
        psi_by_class[name] = psi_of_shares(expected["shares"], actual)
        shares[name] = {
            "expected": expected["predicted_share"],
            "actual": labels.get(name, 0) / rows,
        }
    worst = max(psi_by_class.values(), default=0.0)
    return {
        "class_psi": (worst, psi_by_class),  # the value: the most drifted class's PSI
        "class_shares": (None, shares),
    }
