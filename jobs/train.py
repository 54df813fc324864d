"""Train a model and register it: read labelled data, fit, evaluate, write an MLeap bundle.

Run with `precompute train` or `spark-submit jobs/train.py`. The training data is a Delta table
in the lake (`--table`, at its latest or a given version) or batch files (`--input`), and must
meet the dataset's contract plus its label: any row that breaks it fails the run with the rows
and reasons, since a model should not silently learn from fewer or different rows than asked.

The pipeline (preprocessing and model in one scikit-learn object, see `jobs.modeling`) is fitted
on a seeded split, evaluated on the rest, written as a bundle, and the bundle is scored by the
runtime on the validation rows: it must reproduce scikit-learn's scores within 1e-6, or nothing
is registered. The validation scores become the version's reference distribution for drift.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.modeling import MODEL_KINDS, ModelKind, Task
from precompute.commands import job_main
from precompute.contracts import Contract, load_contract
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.settings import Settings

if TYPE_CHECKING:  # the heavy imports wait until a model is trained, to keep the CLI quick
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from jobs.registry import ModelVersion

CHALLENGER = "challenger"  # where a new version lands unless --alias says otherwise
PARITY_TOLERANCE = 1e-6
SHOWN_REJECTS = 5


class TrainingDataError(PrecomputeError):
    """The training data does not meet the contract, or cannot train this model."""


@dataclass(frozen=True)
class TrainRequest:
    model: str
    dataset: str
    kind: ModelKind
    input_path: str | None = None
    table: str | None = None
    table_version: int | None = None
    contract_version: int | None = None
    task: Task | None = None
    params: dict[str, Any] = field(default_factory=dict)
    validation_share: float = 0.2
    seed: int = 42
    aliases: tuple[str, ...] = (CHALLENGER,)
    description: str = ""


@dataclass(frozen=True)
class TrainResult:
    version: ModelVersion
    rows_train: int
    rows_validation: int
    parity_max_diff: float

    def summary(self) -> str:
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in self.version.metrics.items() if isinstance(v, float)
        )
        aliases = f" [{', '.join(self.version.aliases)}]" if self.version.aliases else ""
        return (
            f"registered {self.version.label}{aliases} ({self.version.model_kind}): "
            f"{self.rows_train} training rows, {self.rows_validation} validation rows; {metrics}; "
            f"runtime parity {self.parity_max_diff:.1e}; bundle {self.version.bundle_uri}"
        )


def train(spark: SparkSession, settings: Settings, request: TrainRequest) -> TrainResult:
    import numpy as np
    import pyarrow as pa
    from sklearn.model_selection import train_test_split

    from jobs import modeling
    from jobs.bundle.export import export_bundle
    from jobs.registration import register

    if not 0 < request.validation_share < 1:
        raise TrainingDataError("the validation share must be between 0 and 1")
    contract = load_contract(settings.contracts_dir, request.dataset, request.contract_version)
    labelled = contract.for_training()
    assert contract.label is not None
    layout = modeling.feature_layout(contract)
    task = modeling.task_for(request.kind, contract.label, request.task)
    pipeline = modeling.build_pipeline(contract, request.kind, task, request.params)

    table, source = _read_training_data(spark, settings, request, labelled)
    target = _target(table.column(contract.label.name), task)
    classes = _classes(target, task, contract.label.name)
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
    scores = modeling.positive_scores(pipeline, frame.iloc[valid_rows], task)
    metrics = _metrics(pipeline, frame.iloc[valid_rows], target[valid_rows], scores, task)

    from jobs.bundle.format import read_bundle
    from jobs.bundle.runtime import compile_bundle
    from jobs.monitoring import reference_distribution

    metadata = {
        "format": 1,
        "model": request.model,
        "model_kind": request.kind,
        "task": task,
        "classes": [_class_name(c) for c in classes] if classes is not None else None,
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
        replayed = plan.score(table.take(pa.array(valid_rows)))["score"].to_numpy()
        parity = float(np.max(np.abs(replayed - scores))) if scores.size else 0.0
        if not parity <= PARITY_TOLERANCE:
            raise TrainingDataError(
                f"the exported bundle scores differ from scikit-learn's by up to {parity:.2e} "
                f"(tolerance {PARITY_TOLERANCE}); not registering it"
            )
        version = register(
            Database.from_settings(settings),
            settings.models_root,
            path,
            request.model,
            description=request.description or contract.description,
            training_data=source | {"rows": table.num_rows, "validation_rows": len(valid_rows)},
            metrics=metrics,
            reference_scores=reference_distribution(scores),
            aliases=request.aliases,
        )
    return TrainResult(version, len(train_rows), len(valid_rows), parity)


def _read_training_data(
    spark: SparkSession, settings: Settings, request: TrainRequest, labelled: Contract
) -> tuple[pa.Table, dict[str, Any]]:
    """The validated rows (entity id, features, label) and a reference to where they came from."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import functions as F

    from jobs import landing, validation
    from jobs.lake import lake

    if (request.input_path is None) == (request.table is None):
        raise TrainingDataError("give the training data as --input PATH or --table NAME (one)")
    if request.table is not None:
        engine = lake(spark, settings)
        if not engine.exists(request.table):
            raise TrainingDataError(f"no Delta table {request.table!r} under {settings.lake_uri}")
        version = request.table_version
        if version is None:
            version = engine.version(request.table)
        uri = engine.table_uri(request.table)
        df = engine.read(request.table, version)
        landing.check_columns(labelled, set(df.columns), f"table {uri} (version {version})")
        df = df.select(*[c.name for c in labelled.columns], F.lit(uri).alias(landing.SOURCE_FILE))
        raw = landing.RawBatch(df, None)
        source: dict[str, Any] = {"delta_table": uri, "table_version": version}
    else:
        assert request.input_path is not None
        files = landing.batch_files(request.input_path)
        raw = landing.read_batch(spark, files, landing.detect_format(files), labelled)
        source = {"files": request.input_path, "file_count": len(files)}

    validated = validation.validate(raw, labelled)
    wanted = [labelled.entity_id.name, *(c.name for c in labelled.features)]
    table = validated.select(*wanted, "_q_entity_id", "_q_reasons", validation.ROUTE).toArrow()
    rejected = np.asarray(
        table.column(validation.ROUTE).to_numpy(zero_copy_only=False) == validation.QUARANTINE
    )
    if rejected.any():
        shown = table.filter(pa.array(rejected)).slice(0, SHOWN_REJECTS).to_pylist()
        examples = [
            f"{row['_q_entity_id']!r}: "
            + ", ".join(
                f"{r['code']}({r['column']})" if r["column"] else r["code"]
                for r in row["_q_reasons"]
            )
            for row in shown
        ]
        raise TrainingDataError(
            f"the training data breaks contract {labelled.ref} (with label "
            f"{labelled.features[-1].name!r}): {int(rejected.sum())} of {len(rejected)} rows "
            f"rejected, e.g. {'; '.join(examples)}. Fix or drop those rows and train again"
        )
    if table.num_rows == 0:
        raise TrainingDataError("the training data has no rows")
    return table.select(wanted), source


def _target(column: pa.ChunkedArray, task: Task) -> np.ndarray:
    import numpy as np

    if task == "regression":
        return np.asarray(column.to_numpy(), dtype=np.float64)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _classes(target: np.ndarray, task: Task, label: str) -> np.ndarray | None:
    import numpy as np

    if task != "classification":
        return None
    classes = np.unique(target)
    if len(classes) != 2:
        raise TrainingDataError(
            f"label {label!r} has {len(classes)} distinct values "
            f"({', '.join(map(str, classes[:5]))}); classification here is binary"
        )
    return classes


def _class_name(value: Any) -> str:
    import numpy as np

    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def _metrics(
    pipeline: Any, frame: Any, target: np.ndarray, scores: np.ndarray, task: Task
) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics

    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(target, scores))),
            "mae": float(metrics.mean_absolute_error(target, scores)),
            "r2": float(metrics.r2_score(target, scores)),
        }
    positive = target == pipeline.classes_[1]
    return {
        "auc": float(metrics.roc_auc_score(positive, scores)),
        "log_loss": float(metrics.log_loss(positive, scores, labels=[False, True])),
        "accuracy": float(metrics.accuracy_score(target, pipeline.predict(frame))),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name, e.g. churn")
    parser.add_argument("--dataset", required=True, help="contract name, e.g. customers")
    parser.add_argument("--kind", required=True, choices=MODEL_KINDS, help="estimator")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="labelled batch files (CSV, JSON lines or Parquet)")
    source.add_argument("--table", help="a Delta table in the lake, e.g. training/customers")
    parser.add_argument("--table-version", type=int, help="Delta version (default: latest)")
    parser.add_argument("--contract-version", type=int, help="default: the newest")
    parser.add_argument("--task", choices=["classification", "regression"])
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="estimator parameter, e.g. --param n_estimators=200 (repeatable)",
    )
    parser.add_argument("--validation-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--alias",
        action="append",
        help=f"alias(es) to point at the new version (default: {CHALLENGER})",
    )
    parser.add_argument("--description", default="")


def request_from(args: argparse.Namespace) -> TrainRequest:
    params = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise TrainingDataError(f"--param {item!r}: write NAME=VALUE")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return TrainRequest(
        model=args.model,
        dataset=args.dataset,
        kind=args.kind,
        input_path=args.input,
        table=args.table,
        table_version=args.table_version,
        contract_version=args.contract_version,
        task=args.task,
        params=params,
        validation_share=args.validation_share,
        seed=args.seed,
        aliases=tuple(args.alias) if args.alias else (CHALLENGER,),
        description=args.description,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same arguments as `precompute train`."""
    return job_main("train", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.spark import spark_session

    request = request_from(args)
    spark = spark_session(settings, "precompute-train")
    print(train(spark, settings, request).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
