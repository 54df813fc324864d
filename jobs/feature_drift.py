"""Feature drift: a batch's profile against its model version's training profile.

Per feature, in the units `jobs.monitoring` uses for scores (PSI: below 0.1 stable, 0.1-0.25
worth a look, above a shift):
- numbers: PSI over the training deciles. Exact when the ingest counted the batch on those
  bins (it counts on the dataset's newest training profile); otherwise both sides' shares are
  read off their quantiles (`estimated`), the same way, so an unchanged distribution still
  reads near zero;
- strings and booleans: PSI over the training categories plus one bucket for every other value;
- every feature: the change of its missing share.
Each is held to the column's thresholds (`thresholds_for`): over `fail` fails the check, over
`warn` warns.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jobs.monitoring import psi_of_shares
from jobs.profiles import CATEGORICAL, QUANTILES, FeatureProfile, quantile_name
from precompute.contracts import NUMERIC, Contract, DriftThresholds
from precompute.settings import Settings

Level = Literal["ok", "warn", "fail"]
OTHER = "(other)"


@dataclass(frozen=True)
class Thresholds:
    warn: float
    fail: float
    missing_warn: float
    missing_fail: float


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: its PSI, missing shares and the level they reach."""

    feature: str
    measure: Literal["psi", "category_psi"]
    psi: float
    estimated: bool
    missing_share: float
    training_missing_share: float
    level: Level
    thresholds: Thresholds
    labels: list[str]  # the bins or categories
    expected: list[float]  # training shares
    actual: list[float]  # batch shares

    @property
    def missing_change(self) -> float:
        return self.missing_share - self.training_missing_share


def thresholds_for(settings: Settings, contract: Contract) -> dict[str, Thresholds]:
    """Each feature's thresholds: the settings', overridden by its contract column's `drift`."""

    def pick(own: float | None, default: float) -> float:
        return default if own is None else own

    out = {}
    for column in contract.features:
        own = column.drift or DriftThresholds()
        out[column.name] = Thresholds(
            pick(own.warn, settings.drift_warn_psi),
            pick(own.fail, settings.drift_fail_psi),
            pick(own.missing_warn, settings.drift_warn_missing),
            pick(own.missing_fail, settings.drift_fail_missing),
        )
    return out


def feature_drift(
    training: Sequence[FeatureProfile],
    batch: Sequence[FeatureProfile],
    thresholds: dict[str, Thresholds],
) -> list[FeatureDrift]:
    """Drift of every feature both profiles hold and a threshold names, most drifted first."""
    batch_by_name = {p.feature: p for p in batch}
    out = []
    for expected in training:
        actual = batch_by_name.get(expected.feature)
        limits = thresholds.get(expected.feature)
        if actual is None or limits is None or actual.rows == actual.missing:
            continue
        if expected.type in NUMERIC and actual.bins is None and actual.quantiles is None:
            continue  # values, but none in the sketches' sample (jobs.profiles): no shares
        if expected.type in NUMERIC and expected.bins is not None:
            labels, e, a, estimated = _numeric_shares(expected, actual)
            measure: Literal["psi", "category_psi"] = "psi"
        elif expected.type in CATEGORICAL and expected.top_values:
            labels, e, a = _category_shares(expected, actual)
            measure, estimated = "category_psi", False
        else:
            continue
        value = psi_of_shares(e, a)
        change = abs(actual.missing_share - expected.missing_share)
        level: Level = "ok"
        if value > limits.fail or change > limits.missing_fail:
            level = "fail"
        elif value > limits.warn or change > limits.missing_warn:
            level = "warn"
        out.append(
            FeatureDrift(
                expected.feature,
                measure,
                value,
                estimated,
                actual.missing_share,
                expected.missing_share,
                level,
                limits,
                labels,
                [float(x) for x in e],
                [float(x) for x in a],
            )
        )
    return sorted(out, key=lambda d: -d.psi)


def _numeric_shares(
    training: FeatureProfile, batch: FeatureProfile
) -> tuple[list[str], np.ndarray, np.ndarray, bool]:
    assert training.bins is not None
    edges = np.asarray(training.bins["edges"], dtype=np.float64)
    labels = _bin_labels(edges)
    counted = batch.bins is not None and np.array_equal(
        np.asarray(batch.bins["edges"], dtype=np.float64), edges
    )
    if counted:
        assert batch.bins is not None
        e = _shares(training.bins["counts"])
        return labels, e, _shares(batch.bins["counts"]), False
    return labels, _quantile_shares(training, edges), _quantile_shares(batch, edges), True


def _quantile_shares(profile: FeatureProfile, edges: np.ndarray) -> np.ndarray:
    """Bin shares read off a profile's quantiles: its distribution function, linear between
    (min, 0), the quantiles and (max, 1), taking the highest probability at tied values."""
    assert profile.quantiles is not None
    xs = [profile.minimum, *(profile.quantiles[quantile_name(q)] for q in QUANTILES)]
    ps = [0.0, *QUANTILES]
    xs.append(profile.maximum)
    ps.append(1.0)
    points: dict[float, float] = {}
    for x, p in zip(xs, ps, strict=True):
        assert x is not None
        points[float(x)] = max(points.get(float(x), 0.0), p)
    x_sorted = np.asarray(sorted(points))
    p_sorted = np.maximum.accumulate(np.asarray([points[x] for x in x_sorted]))
    below = np.interp(edges, x_sorted, p_sorted, left=0.0, right=1.0)
    return np.diff(np.concatenate(([0.0], below, [1.0])))


def _category_shares(
    training: FeatureProfile, batch: FeatureProfile
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Shares of present values over the training categories and one bucket for the rest."""
    assert training.top_values is not None
    categories = [str(v["value"]) for v in training.top_values]
    seen = {str(v["value"]): int(v["count"]) for v in batch.top_values or []}
    present = max(batch.rows - batch.missing, 1)
    a = [seen.get(c, 0) / present for c in categories]
    e = [int(v["count"]) / max(training.rows - training.missing, 1) for v in training.top_values]
    return (
        [*categories, OTHER],
        np.asarray([*e, max(1.0 - sum(e), 0.0)]),
        np.asarray([*a, max(1.0 - sum(a), 0.0)]),
    )


def _shares(counts: Sequence[float]) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    return values / max(float(values.sum()), 1.0)


def _bin_labels(edges: np.ndarray) -> list[str]:
    if not len(edges):
        return ["all"]
    bounds = [f"{e:.4g}" for e in edges]
    inner = [f"{a}-{b}" for a, b in itertools.pairwise(bounds)]
    return [f"≤ {bounds[0]}", *inner, f"> {bounds[-1]}"]


def as_detail(drift: FeatureDrift) -> dict[str, Any]:
    """What the drift table keeps of one feature beyond its figures."""
    return {"labels": drift.labels, "expected": drift.expected, "actual": drift.actual}
