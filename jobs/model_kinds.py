"""The models training offers: each kind, the task it does, and the contract features it takes.

Cheap to import (no scikit-learn): the training DAG lists the kinds in its trigger form, and the
command line checks `--kind` against them; `jobs.modeling` builds the pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from precompute.contracts import Column, Contract
from precompute.errors import PrecomputeError

ModelKind = Literal[
    "logistic_regression",
    "linear_regression",
    "random_forest",
    "decision_tree",
    "xgboost",
    "lightgbm",
]
Task = Literal["classification", "regression"]
MODEL_KINDS: tuple[ModelKind, ...] = (
    "logistic_regression",
    "linear_regression",
    "random_forest",
    "decision_tree",
    "xgboost",
    "lightgbm",
)


class ModelSpecError(PrecomputeError):
    """The model asked for cannot be built from this contract and these parameters."""


@dataclass(frozen=True)
class FeatureLayout:
    """Which contract features are numeric and which categorical, in pipeline order."""

    numeric: tuple[str, ...]
    categorical: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numeric, *(c.name for c in self.categorical))


def feature_layout(contract: Contract) -> FeatureLayout:
    numeric, categorical = [], []
    for column in contract.features:
        if column.type in ("long", "double", "boolean"):
            numeric.append(column.name)
        elif column.type == "string" and column.allowed:
            categorical.append(column)
        else:
            raise ModelSpecError(
                f"feature {column.name!r} ({column.type}"
                f"{', no allowed values' if column.type == 'string' else ''}) cannot be a model "
                "input: models take numbers, booleans, and strings with `allowed` values"
            )
    return FeatureLayout(tuple(numeric), tuple(categorical))


def task_for(kind: ModelKind, label: Column, requested: Task | None) -> Task:
    implied: Task | None = {"logistic_regression": "classification"}.get(kind)  # type: ignore[assignment]
    if kind == "linear_regression":
        implied = "regression"
    task = requested or implied or ("regression" if label.type == "double" else "classification")
    if implied is not None and task != implied:
        raise ModelSpecError(f"{kind} does {implied}, not {task}")
    if task == "regression" and label.type not in ("double", "long"):
        raise ModelSpecError(f"regression needs a numeric label; {label.name} is {label.type}")
    return task
