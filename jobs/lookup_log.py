"""The lookup log's shipper: the API's closed spool files into the Delta table `lookup_log`, and
the traffic of every hour they touch into PostgreSQL (`analytics.lookup_traffic`).

Run with `precompute lookup-log ship` or `spark-submit jobs/lookup_log.py`, where the spool
folder (`PRECOMPUTE_LOOKUP_LOG_DIR`) is; the `lookup_log` DAG runs it hourly.

At least once, and never twice: the records are merged into the table on their request id
(a record already there is not inserted again), then the hours they fall in are counted again
from the table and replace those hours' rows in PostgreSQL, and only then are the files
deleted. A shipper stopped anywhere on the way leaves the files, and the next one ships them
again without doubling anything. Files of an API process that died are closed and shipped too
(`precompute.lookup_log`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.lake import lake
from jobs.spark import spark_session
from precompute import lookup_log
from precompute.commands import job_main
from precompute.database import Database
from precompute.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

TABLE = "lookup_log"
SCHEMA = (
    "request_id string, at timestamp, day date, hour timestamp, route string, method string, "
    "status int, latency_ms double, api_key string, model string, version int, hits int, "
    "misses int, detail string"
)
# Records per Delta commit: a commit's records are held in the driver's memory (about 0.5 KB
# each as Python objects).
COMMIT_RECORDS = 500_000
# Shippers replace hours in PostgreSQL one at a time (any constant; the same for all of them).
TRAFFIC_LOCK = 7_270_316_819
REPLACE_HOURS = "DELETE FROM precompute.lookup_traffic WHERE hour = ANY(%s)"
INSERT_HOUR = """
INSERT INTO precompute.lookup_traffic (hour, model, version, route, requests, hits, misses,
                                       client_errors, server_errors, p50_ms, p95_ms, max_ms)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True)
class Shipped:
    """What one ship did: files and records read, records new to the table (the others were
    shipped before), unreadable lines skipped, hours recounted in PostgreSQL."""

    files: int
    records: int
    added: int
    unreadable: int
    hours: int


def ship(spark: SparkSession, settings: Settings, db: Database) -> Shipped:
    """Ship every closed spool file; delete each only once its records are in both stores."""
    files = lookup_log.closed_files(settings.lookup_log_dir)
    records = added = unreadable = 0
    hours: set[int] = set()
    for chunk in _chunks(files):
        rows, bad = read_records(chunk)
        unreadable += bad
        records += len(rows)
        if rows:
            added += _merge(spark, settings, rows)
            hours |= {int(r["hour"].timestamp()) for r in rows}
    if hours:
        _replace_hours(db, _count_hours(spark, settings, hours))
    for path in files:
        path.unlink(missing_ok=True)  # both stores have it now
    return Shipped(len(files), records, added, unreadable, len(hours))


def read_records(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], int]:
    """The records of spool files as the table's rows, and how many lines could not be read
    (a line cut short by a machine that lost power: the rest of the file is still shipped)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                record = json.loads(line)
                rows.append(_row(record))
            except (ValueError, TypeError, KeyError):
                bad += 1 if line.strip() else 0
    return rows, bad


def _row(record: dict[str, Any]) -> dict[str, Any]:
    ts = float(record["ts"])
    at = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return {
        "request_id": str(record["request_id"]),
        "at": at,
        "day": at.date(),
        "hour": datetime.datetime.fromtimestamp(ts // 3600 * 3600, datetime.UTC),
        "route": record.get("route"),
        "method": record.get("method"),
        "status": record.get("status"),
        "latency_ms": record.get("latency_ms"),
        "api_key": record.get("key"),
        "model": record.get("model"),
        "version": record.get("version"),
        "hits": record.get("hits"),
        "misses": record.get("misses"),
        "detail": None if record.get("detail") is None else str(record["detail"]),
    }


def _chunks(files: Sequence[Path]) -> Iterator[list[Path]]:
    """Files in groups of about COMMIT_RECORDS records (told by size: ~250 bytes a record)."""
    chunk: list[Path] = []
    size = 0
    for path in files:
        chunk.append(path)
        size += path.stat().st_size
        if size >= COMMIT_RECORDS * 250:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _arrow(rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa  # loaded with Spark: only when a job runs

    utc = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            ("request_id", pa.string()),
            ("at", utc),
            ("day", pa.date32()),
            ("hour", utc),
            ("route", pa.string()),
            ("method", pa.string()),
            ("status", pa.int32()),
            ("latency_ms", pa.float64()),
            ("api_key", pa.string()),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("hits", pa.int32()),
            ("misses", pa.int32()),
            ("detail", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _merge(spark: SparkSession, settings: Settings, rows: list[dict[str, Any]]) -> int:
    """Insert the records the table does not hold yet; how many were new."""
    from delta.tables import DeltaTable  # delta-spark loads pyspark: only when a job runs

    engine = lake(spark, settings)
    uri = engine.table_uri(TABLE)
    if not engine.exists(TABLE):
        # Made by a write, not DeltaTable.create: that one goes through the catalog, which makes
        # a spark-warehouse folder in the working directory.
        empty = spark.createDataFrame([], SCHEMA)
        empty.write.format("delta").partitionBy("day").mode("append").save(uri)
    source = spark.createDataFrame(_arrow(rows)).dropDuplicates(["request_id"])
    # The days as literals: Delta then reads only those partitions of the table.
    days = ", ".join(sorted({f"DATE'{r['day'].isoformat()}'" for r in rows}))
    metrics = (
        DeltaTable.forPath(spark, uri)
        .alias("t")
        .merge(source.alias("s"), f"t.day IN ({days}) AND t.request_id = s.request_id")
        .whenNotMatchedInsertAll()
        .execute()
        .collect()
    )
    return int(metrics[0]["num_inserted_rows"]) if metrics else 0


def _count_hours(spark: SparkSession, settings: Settings, hours: set[int]) -> list[tuple[Any, ...]]:
    """Each hour's traffic per model, version and route, counted from the whole table."""
    from pyspark.sql import functions as F  # pyspark is heavy: only when a job runs

    days = sorted({datetime.datetime.fromtimestamp(h, datetime.UTC).date() for h in hours})
    log: DataFrame = lake(spark, settings).read(TABLE)
    hour = F.col("hour").cast("long")
    counted = (
        log.where(F.col("day").isin(days) & hour.isin(sorted(hours)))
        .groupBy(hour.alias("hour"), "model", "version", "route")
        .agg(
            F.count(F.lit(1)).alias("requests"),
            F.coalesce(F.sum("hits"), F.lit(0)).alias("hits"),
            F.coalesce(F.sum("misses"), F.lit(0)).alias("misses"),
            F.count(F.when(F.col("status").between(400, 499), 1)).alias("client_errors"),
            F.count(F.when(F.col("status") >= 500, 1)).alias("server_errors"),
            F.percentile_approx("latency_ms", 0.5).alias("p50_ms"),
            F.percentile_approx("latency_ms", 0.95).alias("p95_ms"),
            F.max("latency_ms").alias("max_ms"),
        )
        .collect()
    )
    return [(datetime.datetime.fromtimestamp(r["hour"], datetime.UTC), *r[1:]) for r in counted]


def _replace_hours(db: Database, counted: list[tuple[Any, ...]]) -> None:
    """The hours' rows in PostgreSQL replaced by their new counts, in one transaction."""
    hours = sorted({row[0] for row in counted})
    with db.transaction("writer") as cursor:
        # Two shippers replacing the same hour at once would both insert it.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (TRAFFIC_LOCK,))
        cursor.execute(REPLACE_HOURS, (hours,))
        cursor.executemany(INSERT_HOUR, counted)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments: the spool folder comes from the settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same as `precompute lookup-log ship`."""
    return job_main("lookup_log", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not lookup_log.closed_files(settings.lookup_log_dir):
        print(f"lookup log: nothing to ship in {settings.lookup_log_dir}")
        return 0
    spark = spark_session(settings, "precompute-lookup-log")
    done = ship(spark, settings, Database.from_settings(settings))
    print(
        f"lookup log: shipped {done.files} files, {done.records} records "
        f"({done.added} new, {done.records - done.added} already shipped), "
        f"{done.unreadable} unreadable lines skipped; {done.hours} hours recounted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
