"""
### Maintenance: Delta compaction and vacuum, old serving versions, old run records

Daily housekeeping, each task independent of the others:

- **lake** (`jobs/maintenance.py`, spark-submit): compacts and vacuums every Delta table the
  platform writes; files older than `PRECOMPUTE_LAKE_RETENTION_HOURS` that no newer version
  reads are deleted. Run records finished more than `PRECOMPUTE_RUN_RECORDS_KEPT_DAYS` ago are
  removed too, unless their model version is still served.
- **serving**: drops the serving partitions of each model's versions beyond the newest
  `PRECOMPUTE_SERVING_VERSIONS_KEPT`, never a version an alias points at.

The `lookup_log` DAG, in this file too, ships the lookup API's request log hourly.
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

LOOKUP_LOG_DOC = """
### Lookup log: the lookup API's requests into the lake and analytics.lookup_traffic

Hourly, one task:

- **ship** (`jobs/lookup_log.py`, spark-submit): the closed spool files the API wrote under
  `PRECOMPUTE_LOOKUP_LOG_DIR` (a worker must see that folder) are merged into the Delta table
  `lookup_log` on their request ids, the hours they touch are counted again into
  `analytics.lookup_traffic`, and only then are the files deleted. A retry ships again without
  doubling anything.
"""

with DAG(
    dag_id="lookup_log",
    description="Ship the lookup API's request log to Delta and analytics.lookup_traffic.",
    doc_md=LOOKUP_LOG_DOC,
    schedule="@hourly",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=5)},
    tags=["precompute", "maintenance"],
) as lookup_log_dag:
    spark_job("lookup_log", task_id="ship")
