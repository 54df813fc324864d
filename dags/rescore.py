"""
### Rescore: score every current entity with a chosen version, then optionally promote it

Shadow scoring: the version scores the newest row of every entity ingested so far, and its
predictions are published to the version's own serving partition. The champion keeps answering
lookups meanwhile; the new version's answers can be compared side by side through the lookup API
(`?version=N`) or in SQL (`precompute.predictions` by `model_version_id`).

1. **plan**: resolves the version and names the run `rescore-MODEL-vN-TIME`.
2. **stages** (`jobs/stages.py`): score every current entity and publish, as in `score_batch`;
   a full rescore swaps the version's partition in one transaction.
3. **check**: counts add up and the drift (PSI against the version's training reference) is
   within `PRECOMPUTE_MAX_PSI`.
4. **promote**: when the `promote` Param is on, the version becomes the champion: lookups switch
   to it with the next request. `precompute model rollback` undoes it.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowSkipException

from jobs.promotion import promote_version
from jobs.report_link import point_to, with_report_link
from jobs.run_check import check_runs
from jobs.run_report import report_url
from jobs.spark_tasks import spark_job
from precompute import names
from precompute.settings import Settings

with DAG(
    dag_id="rescore",
    description="Full rescore of every current entity with a chosen version; optional promotion.",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # a full rescore is the heaviest job there is
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=1)},
    tags=["precompute", "scoring"],
    render_template_as_native_obj=True,
    params={
        "model": Param("churn", type="string", minLength=1, description="Registered model."),
        "version": Param(
            1, type="integer", minimum=1, description="The version that rescores every entity."
        ),
        "device": Param("auto", enum=["auto", "cpu", "gpu"], description="Where the model scores."),
        "promote": Param(
            False,
            type="boolean",
            description="Make the version the champion once its predictions are published.",
        ),
    },
) as dag:

    @task
    def plan(params: dict | None = None) -> dict:  # type: ignore[type-arg]
        """Resolve the version; name the run."""
        # The planner finds landed batches with deltalake, which loads pyarrow: imported when
        # the task runs, not each time Airflow parses this file.
        from jobs.run_planning import plan_runs, stages_args

        [chosen] = plan_runs(Settings(), (params or {}) | {"mode": "full"}, names.run_stamp())
        print(f"run {chosen.run_id}: every current entity with {chosen.model} v{chosen.version}")
        return {
            "run_ids": [chosen.run_id],
            "stages": stages_args([chosen]),
            "max_rejected_share": chosen.max_rejected_share,
        }

    # Also after failed stages, so a failed run is checked and reported too.
    @task(trigger_rule=TriggerRule.NONE_SKIPPED)
    def check(planned: dict | None) -> str:  # type: ignore[type-arg]
        """Counts must add up; drift must be within its limit."""
        if planned is None:  # the plan failed: nothing ran, nothing to check
            raise AirflowSkipException("the plan task failed: no run to check")
        settings = Settings()
        point_to(report_url(settings, planned["run_ids"][-1]))
        return check_runs(settings, planned["run_ids"], planned["max_rejected_share"])

    @task
    def promote(params: dict | None = None) -> str:  # type: ignore[type-arg]
        """Champion -> the rescored version, when the Param asks."""

        p = params or {}
        if not p.get("promote"):
            raise AirflowSkipException("the promote Param is off: the champion is unchanged")
        return promote_version(Settings(), p["model"], int(p["version"]))

    planned = plan()
    stages = spark_job("stages", "plan.stages")
    checked = with_report_link(check(planned))  # type: ignore[arg-type]
    planned >> stages >> checked >> promote()
