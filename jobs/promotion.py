"""Champion and challenger: compare a newly trained challenger's validation metric with the
champion's, and move the `champion` alias to a version."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.registry import Registry
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.names import CHALLENGER, CHAMPION
from precompute.settings import Settings


@dataclass(frozen=True)
class Comparison:
    """A challenger's validation metric against the champion's."""

    model: str
    challenger: int
    champion: int | None
    metric: str
    challenger_value: float
    champion_value: float | None

    @property
    def beats_champion(self) -> bool:
        if self.champion_value is None:
            return True  # no champion yet: nothing to beat
        if self.metric in LOWER_IS_BETTER:
            return self.challenger_value < self.champion_value
        return self.challenger_value > self.champion_value

    def summary(self) -> str:
        against = (
            f"champion v{self.champion} {self.champion_value:.4f}"
            if self.champion is not None and self.champion_value is not None
            else "no champion yet"
        )
        verdict = "better" if self.beats_champion else "not better"
        return (
            f"{self.model}: challenger v{self.challenger} {self.metric} "
            f"{self.challenger_value:.4f} against {against}: {verdict}"
        )


# The validation metric each task's versions are compared on.
METRIC = {"classification": "auc", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse"}


def compare_challenger(settings: Settings, model: str) -> Comparison:
    """The version the `challenger` alias points at, against the `champion`'s metric."""
    versions = Registry(Database.from_settings(settings)).versions(model)
    challenger = next((v for v in versions if CHALLENGER in v.aliases), None)
    if challenger is None:
        raise PrecomputeError(f"model {model!r} has no challenger version to evaluate")
    champion = next((v for v in versions if CHAMPION in v.aliases), None)
    metric = METRIC[challenger.task]
    return Comparison(
        model,
        challenger.version,
        champion.version if champion else None,
        metric,
        float(challenger.metrics[metric]),
        float(champion.metrics[metric]) if champion and metric in champion.metrics else None,
    )


def promote_challenger(settings: Settings, comparison: Comparison) -> str:
    """Make the compared challenger the champion (the caller decided it should be)."""
    return promote_version(settings, comparison.model, comparison.challenger)


def promote_version(settings: Settings, model: str, version: int) -> str:
    """Make a version the champion."""
    promoted = Registry(Database.from_settings(settings)).promote(model, version=version)
    return f"{model}: champion -> {promoted.label}"
