"""
### Maintenance: Delta compaction and vacuum, old serving versions, old run records

Daily housekeeping, each task independent of the others:

- **lake** (`jobs/maintenance.py`, spark-submit): compacts and vacuums every Delta table the
  platform writes; files older than `PRECOMPUTE_LAKE_RETENTION_HOURS` that no newer version
  reads are deleted. Run records finished more than `PRECOMPUTE_RUN_RECORDS_KEPT_DAYS` ago are
  removed too, unless their model version is still served.
- **serving**: drops the serving partitions of each model's versions beyond the newest
  `PRECOMPUTE_SERVING_VERSIONS_KEPT`, never a version an alias points at.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task

from jobs import serving_prune
from jobs.spark_tasks import spark_job
from precompute.database import Database
from precompute.settings import Settings

with DAG(
    dag_id="maintenance",
    description="Compact and vacuum Delta; prune serving versions and old run records.",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=5)},
    tags=["precompute", "maintenance"],
) as dag:

    @task
    def serving() -> str:
        """Serving partitions beyond the retention, except aliased versions."""
        settings = Settings()
        db = Database.from_settings(settings)
        removed = serving_prune.prune(db.url("writer"), db.hint, settings.serving_versions_kept)
        return "; ".join(f"removed {r.model} v{r.version} ({r.rows} rows)" for r in removed) or (
            "nothing to remove"
        )

    spark_job("maintenance", task_id="lake")
    serving()
