"""Drift of a multiclass model's scores per class, computed by Spark on a run's predictions,
against the same figures computed with numpy on the same rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs import monitoring
from jobs.predictions import SCORED_SCHEMA

CLASSES = ("short", "mid", "long")


def probabilities(rows: int, seed: int, tilt: float) -> np.ndarray:
    """Rows x classes probabilities; `tilt` moves mass towards the last class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, len(CLASSES))) + np.array([0.0, 0.0, tilt])
    exp = np.exp(logits)
    shares: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return shares


def test_a_multiclass_runs_drift_is_measured_per_class_as_numpy_measures_it(spark: Any) -> None:
    reference = monitoring.reference_distribution(
        probabilities(3000, seed=1, tilt=0.0).max(axis=1), probabilities(3000, 1, 0.0), CLASSES
    )
    run = probabilities(2000, seed=2, tilt=1.5)  # the last class gains
    labels = np.array(CLASSES)[run.argmax(axis=1)]
    rows = [
        (f"e{i}", float(p.max()), str(label), dict(zip(CLASSES, map(float, p), strict=True)))
        for i, (p, label) in enumerate(zip(run, labels, strict=True))
    ]
    frame = spark.createDataFrame(rows, SCORED_SCHEMA)

    metrics = monitoring.run_metrics(frame, "classification", reference)

    worst, by_class = metrics["class_psi"]
    expected = {
        name: monitoring.psi_of_shares(
            reference["classes"][name]["shares"], monitoring.class_bin_shares(run[:, k])
        )
        for k, name in enumerate(CLASSES)
    }
    assert by_class.keys() == expected.keys()
    for name in CLASSES:
        assert abs(by_class[name] - expected[name]) <= 1e-12, name
    assert worst == max(expected.values())
    assert expected["long"] > 0.25  # the tilted class drifts clearly
    shares = metrics["class_shares"][1]
    for name in CLASSES:
        assert abs(shares[name]["actual"] - float(np.mean(labels == name))) <= 1e-12
        assert shares[name]["expected"] == reference["classes"][name]["predicted_share"]
