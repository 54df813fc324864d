"""The Delta Lake tables of the platform, read and written through delta-spark.

Every write is an append in one Delta transaction carrying an application transaction id
(`txnAppId`/`txnVersion`): a job that commits the same id twice changes nothing, so each stage
can be rerun. The writer checks that id before writing, so a rerun does not even write files.
Delta enforces each table's schema on append; tables are partitioned as their `Target` says.
Reads are Spark's own `format("delta")`, at the latest version or one given (time travel).
Maintenance compacts each table (Z-ordered by the column its readers filter on) and vacuums it.

The JARs come from the project's cache (see `jobs.jars`) through the session's `spark.jars`, so a
cluster's executors get them from the driver; a session without them is refused at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from precompute.errors import PrecomputeError
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MISSING_CLASSES = (
    "this Spark session cannot load Delta Lake ({what}): start jobs through `precompute` or "
    "`spark-submit` with the project's Spark settings (`jobs.spark.spark_conf` puts the JARs of "
    "`make setup` on spark.jars)"
)


class LakeError(PrecomputeError):
    """A Delta table cannot be read or written as asked."""


@dataclass(frozen=True)
class Txn:
    """A Delta application transaction: committing the same (app_id, version) twice is a no-op."""

    app_id: str
    version: int = 1


@dataclass(frozen=True)
class Target:
    """One table a write goes to: its columns (in order) and partition columns.

    `sources` maps a table column to the DataFrame column that fills it, where they differ.
    `constants` are columns with one value for the whole write (a batch id, a date).
    `stats_columns` are the columns Delta keeps file statistics on (for skipping files when
    reading with a filter on them), set when the table is created; Delta's default is the first
    32 columns, whose statistics cost a fifth of an ingest's time and serve no reader here.
    `adds_columns`: the write may add columns a table made by an older release lacks (Delta's
    schema merge; the rows already there read null in them).
    """

    table: str
    columns: Sequence[str]
    partition_by: Sequence[str] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    stats_columns: Sequence[str] = ()
    adds_columns: bool = False


@dataclass(frozen=True)
class CommitResult:
    """What an append did: `committed` is False when the transaction was already in the table."""

    table: str
    version: int
    rows: int
    committed: bool


@dataclass(frozen=True)
class TableHistoryEntry:
    """One commit of a table, newest first in `Lake.history`."""

    version: int
    timestamp_ms: int
    operation: str
    metrics: dict[str, str]
    user_metadata: dict[str, str]


class Lake:
    """The Delta tables under one lake root, for one Spark session."""

    def __init__(self, spark: SparkSession, lake_uri: str) -> None:
        _check_delta_classes(spark)
        self.spark = spark
        self.lake_uri = lake_uri.rstrip("/")

    def table_uri(self, table: str) -> str:
        """Where a table (e.g. 'quarantine' or 'incoming/customers') lives."""
        return f"{self.lake_uri}/{table}"

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable  # delta-spark loads pyspark: only when a job runs

        return bool(DeltaTable.isDeltaTable(self.spark, self.table_uri(table)))

    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table's snapshot (the latest, or `version` for time travel) as a DataFrame."""
        if not self.exists(table):
            raise LakeError(f"no Delta table at {self.table_uri(table)}")
        reader = self.spark.read.format("delta")
        if version is not None:
            latest = self.version(table)
            if not 0 <= version <= latest:
                raise LakeError(
                    f"table {self.table_uri(table)} has no version {version} (latest: {latest})"
                )
            reader = reader.option("versionAsOf", version)
        return reader.load(self.table_uri(table))

    def append(
        self,
        df: DataFrame,
        target: Target,
        txn: Txn,
        metadata: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Append `df` to one table in one transaction (a no-op when `txn` is already there)."""
        # pyspark is heavy: the command line reaches this module (through ingest) at start-up.
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        uri = self.table_uri(target.table)
        done = self.committed_version(target.table, txn.app_id)
        if done is not None and done >= txn.version:
            return CommitResult(target.table, self.version(target.table), 0, committed=False)
        columns = [
            _literal(target.constants[c]).alias(c)
            if c in target.constants
            else F.col(target.sources.get(c, c)).alias(c)
            for c in target.columns
        ]
        writer = (
            df.select(*columns)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", txn.app_id)
            .option("txnVersion", txn.version)
            .option("userMetadata", json.dumps(dict(metadata or {}), sort_keys=True))
        )
        if target.partition_by:
            writer = writer.partitionBy(*target.partition_by)
        if target.adds_columns:
            writer = writer.option("mergeSchema", "true")
        if target.stats_columns and not self.exists(target.table):
            writer = writer.option("delta.dataSkippingStatsColumns", ",".join(target.stats_columns))
        try:
            writer.save(uri)
        except AnalysisException as exc:  # schema enforcement, mostly: say which table
            raise LakeError(f"cannot append to {uri}: {_first_line(exc)}") from None
        latest = self.history(target.table, 1)[0]
        rows = int(latest.metrics.get("numOutputRows", 0))
        return CommitResult(target.table, latest.version, rows, committed=True)

    def version(self, table: str) -> int:
        """The table's latest version."""
        return self.history(table, 1)[0].version

    def committed_version(self, table: str, app_id: str) -> int | None:
        """The latest transaction version committed under `app_id`, None if never.

        Read from the table's log by delta-rs, in this process: through Spark's DeltaLog it is
        a Spark job over the table's state, a third of a second each on a warm session, six
        times in a small run. Where delta-rs cannot read the store, through Spark."""
        # deltalake loads pyarrow's filesystems: only when a job runs.
        from deltalake import DeltaTable as LogReader

        uri = self.table_uri(table)
        try:
            if not LogReader.is_deltatable(uri):
                return None
            return LogReader(uri).transaction_version(app_id)
        except Exception:  # a store delta-rs has no driver or credentials for: Spark reads it
            return self._committed_version_by_spark(table, app_id)

    def _committed_version_by_spark(self, table: str, app_id: str) -> int | None:
        if not self.exists(table):
            return None
        jvm = self.spark._jvm
        assert jvm is not None
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
            self.spark._jsparkSession, self.table_uri(table)
        )
        found = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())
        versions = found.transactions().get(app_id)
        return None if versions.isEmpty() else int(versions.get())

    def history(self, table: str, limit: int | None = None) -> list[TableHistoryEntry]:
        """The table's commits, newest first."""
        from delta.tables import DeltaTable  # delta-spark loads pyspark: only when a job runs

        rows = DeltaTable.forPath(self.spark, self.table_uri(table)).history(limit).collect()
        return [
            TableHistoryEntry(
                version=int(r["version"]),
                timestamp_ms=int(r["timestamp"].timestamp() * 1000),
                operation=str(r["operation"]),
                metrics=dict(r["operationMetrics"] or {}),
                user_metadata=_user_metadata(r["userMetadata"]),
            )
            for r in rows
        ]

    def optimize(self, table: str, zorder_by: Sequence[str] = ()) -> dict[str, Any]:
        """Compact small files (Z-ordered by `zorder_by` when given); Delta's figures."""
        from delta.tables import DeltaTable  # delta-spark loads pyspark: only when a job runs

        builder = DeltaTable.forPath(self.spark, self.table_uri(table)).optimize()
        result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
        rows = result.select("metrics.*").collect()
        return rows[0].asDict(recursive=True) if rows else {}

    def vacuum(self, table: str, retention_hours: int) -> int:
        """Delete files no version newer than the retention reads; how many were deleted."""
        from delta.tables import DeltaTable  # delta-spark loads pyspark: only when a job runs

        before = self.history(table, 1)[0].version
        # Delta refuses a retention under a week unless told: the operator set this one
        # (PRECOMPUTE_LAKE_RETENTION_HOURS) knowing that time travel stops at it.
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        self.spark.conf.set(check, "false")
        try:
            DeltaTable.forPath(self.spark, self.table_uri(table)).vacuum(retention_hours)
        finally:
            self.spark.conf.unset(check)
        # VACUUM records its figures as commits of their own (VACUUM START / VACUUM END).
        for entry in self.history(table, 3):
            if entry.version > before and entry.operation == "VACUUM END":
                return int(entry.metrics.get("numDeletedFiles", 0))
        return 0


def lake(spark: SparkSession, settings: Settings) -> Lake:
    """The platform's lake, for this session."""
    return Lake(spark, settings.lake_uri)


def _literal(value: Any) -> Any:
    """A constant column; whole numbers as longs, the type every table here stores them in
    (Spark would make a small one an int, which Delta refuses to append to a long column)."""
    from pyspark.sql import functions as F  # pyspark is heavy: only when a job runs

    if isinstance(value, int) and not isinstance(value, bool):
        return F.lit(value).cast("long")
    return F.lit(value)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _user_metadata(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}  # written by another writer, not as JSON
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _check_delta_classes(spark: SparkSession) -> None:
    """Refuse, with what is missing, a session that cannot load delta-spark's classes."""
    jvm = getattr(spark, "_jvm", None)
    if jvm is None:
        raise LakeError(MISSING_CLASSES.format(what="a session without a JVM"))
    loader = jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader()
    for name in ("io.delta.tables.DeltaTable", "io.delta.sql.DeltaSparkSessionExtension"):
        try:
            jvm.java.lang.Class.forName(name, True, loader)
        except Exception as exc:
            raise LakeError(MISSING_CLASSES.format(what=f"class {name} is missing")) from exc
