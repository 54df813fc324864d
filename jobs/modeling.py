"""The scikit-learn pipelines training fits: preprocessing and model in one object.

Numeric and boolean features are imputed with the training mean (and standardised for linear
models); categorical features (string columns with `allowed` values in the contract) are
one-hot encoded over the contract's values, so a value the contract does not list, or a missing
one, encodes as all zeros. `jobs.bundle.export` writes exactly this shape as an MLeap bundle.

XGBoost and LightGBM take the same imputed features, although both learn where a missing value
goes: a bundle reads a nullable column only through an imputer (MLeap's vector_assembler, on the
JVM as in our runtime, refuses a null), so a booster fed NaN in training would meet imputed
values when scored. Classifiers are fitted on class indices 0..K-1 (`jobs.fitting` encodes the
label), which XGBoost requires and the bundle's class names map back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from jobs.model_kinds import FeatureLayout, ModelKind, ModelSpecError, Task, feature_layout
from precompute.contracts import Contract

SCALED_KINDS = ("logistic_regression", "linear_regression")
# Defaults that train in seconds on a laptop; --param overrides any of them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 1000},
    "linear_regression": {},
    "random_forest": {"n_estimators": 100, "max_depth": 8, "random_state": 0},
    "decision_tree": {"max_depth": 8, "random_state": 0},
    # One thread: Spark runs one task per core, and scoring uses one thread per task as well.
    "xgboost": {
        "n_estimators": 100,
        "max_depth": 6,
        "learning_rate": 0.3,
        "tree_method": "hist",
        "n_jobs": 1,
        "random_state": 0,
    },
    "lightgbm": {
        "n_estimators": 100,
        "max_depth": 6,
        "num_leaves": 31,
        "learning_rate": 0.1,
        "n_jobs": 1,
        "random_state": 0,
    },
}
BOOSTER_KINDS = ("xgboost", "lightgbm")


def build_pipeline(
    contract: Contract, kind: ModelKind, task: Task, params: dict[str, Any] | None = None
) -> Pipeline:
    layout = feature_layout(contract)
    numeric_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="mean", keep_empty_features=True))
    ]
    if kind in SCALED_KINDS:
        numeric_steps.append(("scale", StandardScaler()))
    blocks: list[tuple[str, Any, list[str]]] = []
    if layout.numeric:
        blocks.append(("numeric", Pipeline(numeric_steps), list(layout.numeric)))
    if layout.categorical:
        encoder = OneHotEncoder(
            categories=[list(c.allowed or ()) for c in layout.categorical],
            handle_unknown="ignore",
            sparse_output=False,
            dtype=np.float64,
        )
        blocks.append(("categorical", encoder, [c.name for c in layout.categorical]))
    prepare = ColumnTransformer(blocks, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prepare", prepare), ("model", _estimator(kind, task, params or {}))])


def _estimator(kind: ModelKind, task: Task, params: dict[str, Any]) -> BaseEstimator:
    classes: dict[tuple[str, str], type[BaseEstimator]] = {
        **(_booster_classes(kind) if kind in BOOSTER_KINDS else {}),
        ("logistic_regression", "classification"): LogisticRegression,
        ("linear_regression", "regression"): LinearRegression,
        ("random_forest", "classification"): RandomForestClassifier,
        ("random_forest", "regression"): RandomForestRegressor,
        ("decision_tree", "classification"): DecisionTreeClassifier,
        ("decision_tree", "regression"): DecisionTreeRegressor,
    }
    estimator = classes[(kind, task)]()
    if kind == "lightgbm":
        # LightGBM logs every fit unless told not to; `verbose` is one of its pass-through
        # parameters, which get_params lists (and so --param accepts) only once set.
        estimator.set_params(verbose=-1)
    merged = DEFAULTS[kind] | params
    unknown = sorted(set(merged) - set(estimator.get_params()))
    if unknown:
        raise ModelSpecError(
            f"{type(estimator).__name__} has no parameter {', '.join(unknown)} "
            f"(it has: {', '.join(sorted(estimator.get_params()))})"
        )
    return estimator.set_params(**merged)


def _booster_classes(kind: ModelKind) -> dict[tuple[str, str], type[BaseEstimator]]:
    if kind == "xgboost":
        import xgboost  # a second to import: only training a booster of its kind loads it

        return {
            ("xgboost", "classification"): xgboost.XGBClassifier,
            ("xgboost", "regression"): xgboost.XGBRegressor,
        }
    import lightgbm  # see xgboost above

    return {
        ("lightgbm", "classification"): lightgbm.LGBMClassifier,
        ("lightgbm", "regression"): lightgbm.LGBMRegressor,
    }


def features_frame(table: pa.Table, layout: FeatureLayout) -> pd.DataFrame:
    """Arrow columns as the pipeline takes them: numbers and booleans as float64 with NaN for a
    missing value, categories as Python strings or None (the runtime converts the same way)."""
    data: dict[str, Any] = {}
    for name in layout.numeric:
        data[name] = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
    for column in layout.categorical:
        data[column.name] = np.asarray(table.column(column.name).to_pylist(), dtype=object)
    return pd.DataFrame(data)


def positive_scores(pipeline: Pipeline, frame: pd.DataFrame, task: Task) -> np.ndarray:
    """What the runtime must reproduce for a binary classifier or a regressor: P(positive
    class), or the regression prediction."""
    if task == "classification":
        return np.asarray(pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
    return np.asarray(pipeline.predict(frame), dtype=np.float64)


def model_scores(pipeline: Pipeline, frame: pd.DataFrame, task: Task) -> np.ndarray:
    """What the runtime's model step must reproduce: the regression prediction (n,), P(positive
    class) (n,) for two classes, or every class's probability (n, K) in class-index order."""
    if task == "classification":
        probabilities = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)
        return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
    return np.asarray(pipeline.predict(frame), dtype=np.float64)
