"""Housekeeping: compact and vacuum the Delta tables, drop old run records.

Run with `precompute maintenance` or `spark-submit jobs/maintenance.py`; the maintenance DAG runs
it daily, with `precompute serving prune` for the serving tables.

- **Delta**: every table the platform writes (the predictions history, each dataset's incoming
  and training tables, the quarantine, the lookup log) is compacted (small files from many
  batches merged) and vacuumed: files no version newer than `PRECOMPUTE_LAKE_RETENTION_HOURS`
  reads are deleted, which also bounds how far back time travel reaches.
- **Score requests** finished (done or failed) more than `PRECOMPUTE_SCORE_REQUESTS_KEPT_DAYS`
  ago are deleted, unless a callback is still due; their Idempotency-Keys are free again. First,
  so that the runs they pointed at can go too.
- **Run records** finished more than `PRECOMPUTE_RUN_RECORDS_KEPT_DAYS` ago are deleted with
  their stages and metrics, unless their model version is still served (their predictions may be
  live) or a score request points at them. Their Delta predictions stay in the history.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs import lookup_log, predictions
from jobs.lake import lake
from jobs.spark import spark_session
from jobs.validation import QUARANTINE_TABLE, incoming_table
from precompute import serving_store
from precompute.commands import job_main
from precompute.database import Database
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class Compacted:
    table: str
    files_added: int
    files_removed: int
    files_vacuumed: int


def lake_tables(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The tables the platform writes, each with the column its readers filter on (the Z-order
    of its compaction): predictions by run, quarantine and incoming by batch, the lookup log by
    model (it is partitioned by day, and shipped hourly in small files); per dataset with
    a contract, its incoming and training tables."""
    datasets = sorted(p.name for p in settings.contracts_dir.iterdir() if p.is_dir())
    tables: dict[str, tuple[str, ...]] = {
        predictions.TABLE: ("run_id",),
        QUARANTINE_TABLE: ("batch_id",),
        lookup_log.TABLE: ("model",),
    }
    for dataset in datasets:
        tables[incoming_table(dataset)] = ("batch_id",)
        tables[f"training/{dataset}"] = ()
    return tables


def compact_and_vacuum(spark: SparkSession, settings: Settings) -> list[Compacted]:
    engine = lake(spark, settings)
    done = []
    for table, zorder_by in lake_tables(settings).items():
        if not engine.exists(table):
            continue
        metrics = engine.optimize(table, zorder_by)
        vacuumed = engine.vacuum(table, settings.lake_retention_hours)
        done.append(
            Compacted(
                table,
                int(metrics.get("numFilesAdded", 0)),
                int(metrics.get("numFilesRemoved", 0)),
                vacuumed,
            )
        )
    return done


def remove_finished_requests(db: Database, kept_days: int) -> int:
    """Delete score requests finished more than `kept_days` ago; how many."""
    with db.transaction("writer") as cursor:
        cursor.execute(
            """
            DELETE FROM precompute.score_requests
             WHERE state IN ('done', 'failed')
               AND updated_at < now() - make_interval(days => %s)
               AND callback_state <> 'pending'
            """,
            (kept_days,),
        )
        return int(cursor.rowcount)


def remove_old_runs(db: Database, kept_days: int) -> int:
    """Delete run records finished more than `kept_days` ago that nothing still depends on;
    how many."""
    with db.transaction("writer") as cursor:
        cursor.execute(
            f"""
            WITH old AS (
                SELECT r.run_id FROM precompute.runs r
                 WHERE r.finished_at < now() - make_interval(days => %s)
                   AND (r.model_version_id IS NULL OR r.model_version_id NOT IN
                        (SELECT model_version_id FROM {serving_store.SERVING_VERSIONS}))
                   AND NOT EXISTS (SELECT 1 FROM precompute.score_requests q
                                    WHERE q.run_id = r.run_id)
            ), unpublished AS (
                DELETE FROM {serving_store.PUBLISHED_RUNS} p USING old WHERE p.run_id = old.run_id
            )
            DELETE FROM precompute.runs r USING old WHERE r.run_id = old.run_id
            """,
            (kept_days,),
        )
        return int(cursor.rowcount)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments: the retention comes from the settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same as `precompute maintenance`."""
    return job_main("maintenance", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    spark = spark_session(settings, "precompute-maintenance")
    for c in compact_and_vacuum(spark, settings):
        print(
            f"{c.table}: compacted {c.files_removed} files into {c.files_added}, "
            f"vacuumed {c.files_vacuumed}"
        )
    db = Database.from_settings(settings)
    requests = remove_finished_requests(db, settings.score_requests_kept_days)
    print(f"score requests: removed {requests} past retention")
    print(
        f"run records: removed {remove_old_runs(db, settings.run_records_kept_days)} past retention"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
