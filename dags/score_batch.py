"""
### Score a batch: ingest, score, publish, check

Scores incoming data with a registered model and publishes the predictions to PostgreSQL,
where the lookup API and the analysts' views read them.

1. **plan**: resolves the model version and the batch. With no input path (the scheduled runs),
   it takes the oldest folder under the landing root that no run has ingested yet, and skips the
   rest of the run when there is none.
2. **ingest** (`jobs/ingest.py`): validates the batch into the Delta `incoming` table. Rejected
   rows go to `quarantine` with their reasons; above the maximum rejected share the task fails.
3. **score** (`jobs/score.py`): scores the batch (incremental) or every current entity (full) on
   the GPU when there is one, and keeps the predictions in the Delta history.
4. **publish** (`jobs/publish.py`): makes the run's predictions visible in one transaction.
5. **check**: fails the run when its counts do not add up, or when the rejected share or the
   score drift (PSI) is over its limit (`PRECOMPUTE_MAX_PSI`).

Each Spark stage is a `spark-submit` against the `spark_default` connection, and each is safe to
rerun: a stage that already succeeded for the run changes nothing.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowSkipException

from jobs.run_check import check_run
from jobs.spark_tasks import spark_job
from precompute import names
from precompute.names import CHAMPION
from precompute.settings import Settings

with DAG(
    dag_id="score_batch",
    description="Ingest, score and publish a batch of entities; check counts and drift.",
    doc_md=__doc__,
    schedule=Settings().score_schedule or None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # runs share the serving partition and the landing folder
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=1)},
    tags=["precompute", "scoring"],
    render_template_as_native_obj=True,  # job arguments travel as lists, not strings
    params={
        # Optional inputs admit null: the trigger form marks a Param whose type does not as
        # required and keeps the Trigger button disabled until it is filled.
        "input_path": Param(
            None,
            type=["null", "string"],
            description="Batch file or folder to ingest (CSV, JSON lines or Parquet). Empty: "
            "the oldest batch folder under the landing root not ingested yet.",
        ),
        "batch_id": Param(
            None,
            type=["null", "string"],
            maxLength=200,
            description="The batch's id; reruns reuse it. Empty: the folder's name.",
        ),
        "model": Param("churn", type="string", minLength=1, description="Registered model."),
        "alias": Param(
            CHAMPION, type="string", minLength=1, description="Alias of the version to use."
        ),
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Version number to use instead of the alias.",
        ),
        "mode": Param(
            "incremental",
            enum=["incremental", "full"],
            description="incremental: the batch; full: every current entity (no ingest).",
        ),
        "device": Param("auto", enum=["auto", "cpu", "gpu"], description="Where the model scores."),
        "max_rejected_share": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=1,
            description="Fail when a larger share of the batch's rows is rejected.",
        ),
    },
) as dag:

    @task
    def plan(params: dict | None = None) -> dict:  # type: ignore[type-arg]
        """Resolve the model version and the batch; skip when a scheduled run finds none."""
        # The planner reads the registry and the lake, which load pyarrow: imported when the
        # task runs, not each time Airflow parses this file.
        from jobs.run_planning import plan_score

        stamp = names.run_stamp()
        chosen = plan_score(Settings(), params or {}, stamp)
        if chosen is None:
            raise AirflowSkipException("no new batch under the landing root: nothing to score")
        print(f"run {chosen.run_id}: {chosen.mode} with {chosen.model} v{chosen.version}")
        return {
            "run_id": chosen.run_id,
            "mode": chosen.mode,
            "ingest": chosen.ingest_args() if chosen.mode == "incremental" else None,
            "score": chosen.score_args(),
            "publish": chosen.publish_args(),
            "max_rejected_share": chosen.max_rejected_share,
        }

    @task.branch
    def route(chosen: dict) -> str:  # type: ignore[type-arg]
        """A full rescore reads what is already ingested: straight to score."""
        return "ingest" if chosen["mode"] == "incremental" else "score"

    @task
    def check(chosen: dict) -> str:  # type: ignore[type-arg]
        """Counts must add up; rejected share and drift must be within their limits."""
        settings = Settings()
        return check_run(settings, chosen["run_id"], chosen["max_rejected_share"], settings.max_psi)

    planned = plan()
    ingest = spark_job("ingest", "plan.ingest")
    score = spark_job("score", "plan.score", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    publish = spark_job("publish", "plan.publish")
    route(planned) >> [ingest, score]  # type: ignore[arg-type]
    ingest >> score >> publish >> check(planned)  # type: ignore[arg-type]
