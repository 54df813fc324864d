"""Fit a model on validated labelled rows, evaluate it, and register its bundle as a version.

The pipeline (preprocessing and model in one scikit-learn object, see `jobs.modeling`) is fitted
on a seeded split, evaluated on the rest, written as a bundle, and the bundle is scored by the
runtime on the validation rows: it must reproduce the library's scores (every class's
probability for a multiclass model) within 1e-6, or nothing is registered. The validation scores
become the version's reference distribution for drift.

A classifier's classes are the label's distinct values in the training data, sorted (two: a
binary model; more: multiclass); the model is fitted on their indices.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from jobs import modeling
from jobs.bundle.export import export_bundle
from jobs.bundle.format import read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.model_kinds import Task, feature_layout, task_for
from jobs.monitoring import reference_distribution
from jobs.profile_store import profile_training_data
from jobs.registration import register
from jobs.train_request import TrainingDataError, TrainRequest, TrainResult
from jobs.training_data import read_training_data
from precompute.contracts import load_contract
from precompute.database import Database
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PARITY_TOLERANCE = 1e-6


def train(
    spark: SparkSession, settings: Settings, db: Database, request: TrainRequest
) -> TrainResult:
    """Read, fit, evaluate, check the bundle and register it, as the module docstring says."""
    if not 0 < request.validation_share < 1:
        raise TrainingDataError("the validation share must be between 0 and 1")
    contract = load_contract(settings.contracts_dir, request.dataset, request.contract_version)
    labelled = contract.for_training()
    assert contract.label is not None
    layout = feature_layout(contract)
    task = task_for(request.kind, contract.label, request.task)
    pipeline = modeling.build_pipeline(contract, request.kind, task, request.params)

    table, source = read_training_data(spark, settings, request, labelled)
    target = _target(table.column(contract.label.name), task)
    classes = _classes(target, task, contract.label.name)
    if classes is not None:
        target = np.searchsorted(classes, target)  # class indices, in the order of `classes`
    frame = modeling.features_frame(table, layout)
    try:
        train_rows, valid_rows = train_test_split(
            np.arange(table.num_rows),
            test_size=request.validation_share,
            random_state=request.seed,
            stratify=target if task == "classification" else None,
        )
    except ValueError as exc:
        raise TrainingDataError(f"cannot split {table.num_rows} rows for training: {exc}") from exc
    train_rows.sort()
    valid_rows.sort()
    pipeline.fit(frame.iloc[train_rows], target[train_rows])
    scores = modeling.model_scores(pipeline, frame.iloc[valid_rows], task)
    metrics = _metrics(target[valid_rows], scores, task)
    names = [_class_name(c) for c in classes] if classes is not None else None

    metadata = {
        "format": 1,
        "model": request.model,
        "model_kind": request.kind,
        "task": task,
        "classes": names,
        "label": contract.label.name,
        "input_contract": contract.input_schema(),
        "params": pipeline.named_steps["model"].get_params(),
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "training_data": source,
        "metrics": metrics,
    }
    with tempfile.TemporaryDirectory() as scratch:
        path = export_bundle(
            pipeline, Path(scratch) / "bundle.zip", request.model, _jsonable(metadata)
        )
        # The bundle must score exactly as the pipeline it came from, or it is not registered.
        plan = compile_bundle(read_bundle(path), "cpu")
        replayed = _replayed(plan.score(table.take(pa.array(valid_rows))), scores)
        parity = float(np.max(np.abs(replayed - scores))) if scores.size else 0.0
        if not parity <= PARITY_TOLERANCE:
            raise TrainingDataError(
                f"the exported bundle scores differ from scikit-learn's by up to {parity:.2e} "
                f"(tolerance {PARITY_TOLERANCE}); not registering it"
            )
        version = register(
            db,
            settings.models_root,
            path,
            request.model,
            description=request.description or contract.description,
            training_data=source | {"rows": table.num_rows, "validation_rows": len(valid_rows)},
            metrics=metrics,
            reference_scores=_reference(scores, names),
            aliases=request.aliases,
        )
    profile_training_data(db, contract, version.version_id, table)
    return TrainResult(version, len(train_rows), len(valid_rows), parity)


def _target(column: pa.ChunkedArray, task: Task) -> np.ndarray:

    if task == "regression":
        return np.asarray(column.to_numpy(), dtype=np.float64)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _classes(target: np.ndarray, task: Task, label: str) -> np.ndarray | None:

    if task != "classification":
        return None
    classes = np.unique(target)
    if len(classes) < 2:
        raise TrainingDataError(
            f"label {label!r} has {len(classes)} distinct values "
            f"({', '.join(map(str, classes[:5]))}); a classifier needs two or more"
        )
    return classes


def _replayed(out: pa.RecordBatch, scores: np.ndarray) -> np.ndarray:
    """The runtime's scores in the shape of the library's: every class's probability (the map
    holds them in class order) for a multiclass model, else the score column."""
    if scores.ndim == 2:
        probabilities = out.column("probabilities")
        return np.asarray(probabilities.items.to_numpy()).reshape(scores.shape)
    return np.asarray(out.column("score").to_numpy())


def _reference(scores: np.ndarray, classes: list[str] | None) -> dict[str, Any]:
    """Drift reference: for a multiclass model the predicted class's probability (the score a
    run publishes) plus every class's own distribution."""
    if scores.ndim == 2:
        return reference_distribution(scores.max(axis=1), scores, classes or ())
    return reference_distribution(scores)


def _class_name(value: Any) -> str:

    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def _metrics(target: np.ndarray, scores: np.ndarray, task: Task) -> dict[str, float]:
    """Validation metrics; `target` holds class indices for a classifier. A multiclass AUC is
    the macro average of one-vs-rest AUCs, so promotion compares it as a binary one."""
    if task == "regression":
        return {
            "rmse": float(np.sqrt(mean_squared_error(target, scores))),
            "mae": float(mean_absolute_error(target, scores)),
            "r2": float(r2_score(target, scores)),
        }
    if scores.ndim == 1:
        return {
            "auc": float(roc_auc_score(target == 1, scores)),
            "log_loss": float(log_loss(target == 1, scores, labels=[False, True])),
            "accuracy": float(accuracy_score(target, (scores > 0.5).astype(int))),
        }
    everyone = list(range(scores.shape[1]))
    present = np.unique(target)
    return {
        # roc_auc_score needs every class among the validation rows; else the classes present.
        "auc": float(
            roc_auc_score(target, scores, multi_class="ovr", average="macro", labels=everyone)
            if len(present) == len(everyone)
            else np.mean([roc_auc_score(target == k, scores[:, k]) for k in present])
        ),
        "log_loss": float(log_loss(target, scores, labels=everyone)),
        "accuracy": float(accuracy_score(target, np.argmax(scores, axis=1))),
    }


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON; NaN (XGBoost's default `missing`) becomes null, which strict JSON
    readers accept."""
    plain = json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )
    return _without_nan(plain)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nan(v) for v in value]
    return value
