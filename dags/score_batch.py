"""
### Score a batch: ingest, score, publish, check

Scores incoming data with a registered model and publishes the predictions to PostgreSQL,
where the lookup API and the analysts' views read them.

**When it runs.** The moment a batch folder lands under the landing root: Airflow's triggerer
watches it (the `landing` asset's watcher, `jobs/landing_watch.py`) and this DAG is scheduled on
that asset. Also when triggered by hand or through the REST API, with a path or without one,
and on `PRECOMPUTE_SCORE_SCHEDULE` if that is set.

1. **plan**: resolves the model version and the batches. With no input path, it takes every
   folder under the landing root that no run has ingested yet, oldest first, each its own run;
   with none, the model's pending score requests, if any; otherwise the rest is skipped.
2. **stages** (`jobs/stages.py`): for each planned run in order, **ingest** validates the batch
   into the Delta `incoming` table (rejected rows go to `quarantine` with their reasons; above the
   maximum rejected share it fails), **score** scores it on the GPU when there is one and keeps
   the predictions in the Delta history, **publish** makes them visible in one transaction. One
   Spark session for all of them, on the warm driver when one runs; each stage keeps its own
   record in `run_stages`, and a retry resumes at the stage that failed.
3. **check**: fails when a run's counts do not add up, or when its rejected share, score drift
   (PSI, `PRECOMPUTE_MAX_PSI`) or a feature's drift against the model's training data
   (`PRECOMPUTE_DRIFT_FAIL_PSI`, `PRECOMPUTE_DRIFT_FAIL_MISSING`, or the contract's own) is over
   its limit, naming the features; it warns for those over the warn thresholds.
4. **retraining_signal**: with `PRECOMPUTE_RETRAIN_ON_DRIFT=true`, emits the `precompute-drift`
   asset when a run's feature drift failed (the train_model DAG is then scheduled on it);
   skipped otherwise. A teardown: it does not change the DAG run's state, the check does.
"""

from __future__ import annotations

import datetime

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from jobs.landing_watch import LandingTrigger
from jobs.report_link import point_to, with_report_link
from jobs.run_check import check_runs
from jobs.run_report import report_url
from jobs.spark_tasks import spark_job
from precompute import names
from precompute.names import CHAMPION, DRIFT_ASSET
from precompute.settings import Settings

settings = Settings()
landing = Asset(
    name="landing",
    uri=f"file://{settings.landing_root}",
    watchers=[
        AssetWatcher(
            name="landing_watcher",
            trigger=LandingTrigger(
                settings.landing_root,
                settings.landing_require_marker,
                settings.landing_poll_seconds,
            ),
        )
    ],
)
schedule = (
    AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(settings.score_schedule, timezone="UTC"), assets=landing
    )
    if settings.score_schedule
    else [landing]
)

with DAG(
    dag_id="score_batch",
    description="Ingest, score and publish a batch of entities; check counts and drift.",
    doc_md=__doc__,
    schedule=schedule,
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
            "every batch folder under the landing root not ingested yet, oldest first.",
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
        """Resolve the model version and the batches; skip when there is nothing to score."""
        # The planner reads the registry and the lake, which load pyarrow: imported when the
        # task runs, not each time Airflow parses this file.
        from jobs.run_planning import plan_runs, stages_args

        planned = plan_runs(Settings(), params or {}, names.run_stamp())
        if not planned:
            raise AirflowSkipException("no new batch under the landing root: nothing to score")
        for chosen in planned:
            print(f"run {chosen.run_id}: {chosen.mode} with {chosen.model} v{chosen.version}")
        return {
            "run_ids": [p.run_id for p in planned],
            "stages": stages_args(planned),
            "max_rejected_share": planned[0].max_rejected_share,
        }

    # Also after failed stages, so a failed run is checked and reported too.
    @task(trigger_rule=TriggerRule.NONE_SKIPPED)
    def check(planned: dict | None) -> str:  # type: ignore[type-arg]
        """Counts must add up; rejected share and drift must be within their limits."""
        if planned is None:  # the plan failed: nothing ran, nothing to check
            raise AirflowSkipException("the plan task failed: no run to check")
        settings = Settings()
        point_to(report_url(settings, planned["run_ids"][-1]))  # the newest batch's report
        return check_runs(settings, planned["run_ids"], planned["max_rejected_share"])

    # Emitted only by a run of this task that succeeds: a skipped one emits nothing.
    @task(outlets=[Asset(name=DRIFT_ASSET)])
    def retraining_signal(planned: dict | None) -> str:  # type: ignore[type-arg]
        """Emit the drift asset when a run's feature drift failed and the signal is on."""
        # The check's records are read through the database module: loaded when it runs.
        from jobs.drift_check import retraining_due
        from precompute.database import Database

        settings = Settings()
        if not settings.retrain_on_drift:
            raise AirflowSkipException("the retraining signal is off (PRECOMPUTE_RETRAIN_ON_DRIFT)")
        runs = (planned or {}).get("run_ids") or []
        due = retraining_due(settings, Database.from_settings(settings), runs)
        if not due:
            raise AirflowSkipException("no run's feature drift crossed a fail threshold")
        return f"feature drift failed in {', '.join(due)}: emitted {DRIFT_ASSET}"

    planned = plan()
    stages = spark_job("stages", "plan.stages")
    checked = with_report_link(check(planned))  # type: ignore[arg-type]
    signal = retraining_signal(planned).as_teardown()  # type: ignore[arg-type]
    planned >> stages >> checked >> signal
