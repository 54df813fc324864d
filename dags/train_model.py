"""
### Train a model: train, evaluate, register as challenger, promote if asked and better

1. **arguments**: the training job's command line, from the Params.
2. **train** (`jobs/train.py`, spark-submit): fits the pipeline (preprocessing and model in one
   object, so scoring applies exactly the training preprocessing), checks that the MLeap bundle
   reproduces scikit-learn's scores, and registers it as a new version with the `challenger`
   alias.
3. **evaluate**: compares the challenger's validation metric (AUC for classifiers, RMSE for
   regressors) with the champion's.
4. **promote**: moves the `champion` alias to the challenger only when the `promote` Param is on
   and the challenger is better; otherwise it is skipped, saying why. Scoring runs read the
   champion from then on; `precompute model rollback` undoes it.

**When it runs.** When triggered. With `PRECOMPUTE_RETRAIN_ON_DRIFT=true` also on the
`precompute-drift` asset, which the score_batch DAG emits when a run's feature drift crosses a
fail threshold: it then retrains with the default Params (set them to the model to retrain).
"""

from __future__ import annotations

import dataclasses
import datetime
import json

from airflow.sdk import DAG, Asset, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from jobs.model_kinds import MODEL_KINDS
from jobs.promotion import Comparison, compare_challenger, promote_challenger
from jobs.spark_tasks import spark_job
from precompute.names import DRIFT_ASSET
from precompute.settings import Settings

settings = Settings()

with DAG(
    dag_id="train_model",
    description="Train and register a model version; promote it when asked and better.",
    doc_md=__doc__,
    schedule=[Asset(name=DRIFT_ASSET)] if settings.retrain_on_drift else None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # evaluate reads the challenger alias this run's training set
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=1)},
    tags=["precompute", "training"],
    render_template_as_native_obj=True,
    params={
        "model": Param("churn", type="string", minLength=1, description="Model name."),
        "dataset": Param(
            "customers", type="string", minLength=1, description="Dataset contract name."
        ),
        "kind": Param("logistic_regression", enum=list(MODEL_KINDS), description="Estimator."),
        # Optional inputs admit null, or the trigger form requires them (see score_batch).
        "table": Param(
            "training/customers",
            type=["null", "string"],
            description="Labelled Delta table in the lake (used when input_path is empty).",
        ),
        "input_path": Param(
            None,
            type=["null", "string"],
            description="Labelled batch files instead of a lake table.",
        ),
        "estimator_params": Param(
            {},
            type="object",
            description='Estimator parameters, e.g. {"n_estimators": 200}.',
        ),
        "promote": Param(
            False,
            type="boolean",
            description="Make the new version the champion if its metric beats the champion's.",
        ),
    },
) as dag:

    @task
    def arguments(params: dict | None = None) -> list[str]:  # type: ignore[type-arg]
        """The training job's arguments."""
        p = params or {}
        if p.get("input_path"):
            source = ["--input", p["input_path"]]
        elif p.get("table"):
            source = ["--table", p["table"]]
        else:
            raise ValueError("give the training data: a lake table or an input path")
        args = ["--model", p["model"], "--dataset", p["dataset"], "--kind", p["kind"], *source]
        for name, value in (p.get("estimator_params") or {}).items():
            # As JSON, so false stays a boolean and 200 a number (str() would give "False").
            args += ["--param", f"{name}={json.dumps(value)}"]
        return args

    train = spark_job("train", "arguments")

    @task
    def evaluate(params: dict | None = None) -> dict:  # type: ignore[type-arg]
        """The challenger's metric against the champion's."""
        comparison = compare_challenger(Settings(), (params or {})["model"])
        print(comparison.summary())
        return dataclasses.asdict(comparison)

    @task
    def promote(compared: dict, params: dict | None = None) -> str:  # type: ignore[type-arg]
        """Champion -> challenger, when the Param asks and the metric is better."""

        comparison = Comparison(**compared)
        if not (params or {}).get("promote"):
            raise AirflowSkipException(
                f"not promoted (the promote Param is off): {comparison.summary()}"
            )
        if not comparison.beats_champion:
            raise AirflowSkipException(f"not promoted: {comparison.summary()}")
        return promote_challenger(Settings(), comparison)

    arguments() >> train
    promote(train >> evaluate())
