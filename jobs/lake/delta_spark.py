"""Delta tables through delta-spark, for clusters that have the io.delta JARs on the classpath.

Same contract as the delta-rs engine: staging is a cached DataFrame counted per target (Spark
then writes each target once), and a commit is Spark's own `format("delta")` append with
`txnAppId`/`txnVersion`, which Delta skips when that transaction is already in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobs.lake.base import (
    CommitResult,
    LakeEngine,
    LakeError,
    StagedWrite,
    TableHistoryEntry,
    Target,
    Txn,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MISSING_JARS = (
    "PRECOMPUTE_LAKE_ENGINE=delta-spark needs the Delta Lake JARs on Spark's classpath, and "
    "{what} is missing: add io.delta:delta-spark_2.13 (the version matching the delta-spark "
    "package) with --packages/--jars or spark.jars, or use PRECOMPUTE_LAKE_ENGINE=delta-rs"
)


def check_delta_jars(spark: SparkSession) -> None:
    """Fail at start, with what is missing, when the session cannot load delta-spark's classes."""
    jvm = getattr(spark.sparkContext, "_jvm", None)
    if jvm is None:
        raise LakeError(MISSING_JARS.format(what="a JVM-backed session (Spark Connect?)"))
    for name in ("io.delta.tables.DeltaTable", "io.delta.sql.DeltaSparkSessionExtension"):
        try:
            jvm.java.lang.Class.forName(name)
        except Exception as exc:
            raise LakeError(MISSING_JARS.format(what=f"class {name}")) from exc


class DeltaSparkEngine(LakeEngine):
    def __init__(self, spark: SparkSession, lake_uri: str) -> None:
        check_delta_jars(spark)
        super().__init__(lake_uri)
        self.spark = spark

    def _delta_table(self, table: str) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.table_uri(table))

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.table_uri(table)))

    def read(self, table: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.table_uri(table))

    def stage(
        self, df: DataFrame, targets: Mapping[str, Target], route_column: str | None = None
    ) -> StagedWrite:
        return DeltaSparkStagedWrite(self, df, dict(targets), route_column)

    def version(self, table: str) -> int:
        return int(self._delta_table(table).history(1).collect()[0]["version"])

    def committed_version(self, table: str, app_id: str) -> int | None:
        if not self.exists(table):
            return None
        log = self.spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(  # type: ignore[union-attr]
            self.spark._jsparkSession, self.table_uri(table)
        )
        found = log.update(False, None, None).transactions().get(app_id)
        return None if found.isEmpty() else int(found.get())

    def history(self, table: str, limit: int | None = None) -> list[TableHistoryEntry]:
        rows = self._delta_table(table).history(limit).collect()
        return [
            TableHistoryEntry(
                version=int(r["version"]),
                timestamp_ms=int(r["timestamp"].timestamp() * 1000),
                operation=str(r["operation"]),
                details={"operationParameters": r["operationParameters"]},
            )
            for r in rows
        ]

    def optimize(self, table: str) -> dict[str, Any]:
        metrics = self._delta_table(table).optimize().executeCompaction().collect()
        return metrics[0].asDict(recursive=True) if metrics else {}

    def vacuum(self, table: str, retention_hours: int) -> list[str]:
        self._delta_table(table).vacuum(retention_hours)
        return []


class DeltaSparkStagedWrite(StagedWrite):
    def __init__(
        self,
        engine: DeltaSparkEngine,
        df: DataFrame,
        targets: dict[str, Target],
        route_column: str | None,
    ) -> None:
        from pyspark.sql import functions as F

        self.engine = engine
        self.targets = targets
        self.route_column = route_column
        self.df = df.persist()
        if route_column is None:
            (only,) = targets
            self._counts = {only: self.df.count()}
        else:
            grouped = self.df.groupBy(route_column).agg(F.count("*").alias("n")).collect()
            found = {row[route_column]: int(row["n"]) for row in grouped}
            self._counts = {name: found.get(name, 0) for name in targets}

    def commit(
        self, target: str, txn: Txn, metadata: Mapping[str, str] | None = None
    ) -> CommitResult:
        from pyspark.sql import functions as F

        spec = self.targets[target]
        done = self.engine.committed_version(spec.table, txn.app_id)
        if done is not None and done >= txn.version:
            version = self.engine.version(spec.table)
            return CommitResult(spec.table, version, self._counts[target], committed=False)
        rows = self.df
        if self.route_column is not None:
            rows = rows.where(F.col(self.route_column) == target)
        columns = [
            F.lit(spec.constants[c]).alias(c)
            if c in spec.constants
            else F.col(spec.sources.get(c, c)).alias(c)
            for c in spec.columns
        ]
        writer = (
            rows.select(*columns)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", txn.app_id)
            .option("txnVersion", txn.version)
        )
        for key, value in (metadata or {}).items():
            writer = writer.option(f"userMetadata.{key}", value)
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        writer.save(self.engine.table_uri(spec.table))
        version = self.engine.version(spec.table)
        return CommitResult(spec.table, version, self._counts[target], committed=True)

    def discard(self) -> None:
        self.df.unpersist()
