"""Delta tables from Spark through delta-rs: one transaction per write, idempotent, checked."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pytest

from jobs.lake import LakeError, Target, Txn
from jobs.lake.delta_rs import DeltaRsEngine
from jobs.lake.delta_spark import DeltaSparkEngine
from jobs.lake.staging_source import partition_value

DAY = datetime.date(2026, 11, 20)
TARGET = Target("things", ["id", "x", "kind", "at", "day"], partition_by=["day"])


def rows(spark: Any, n: int = 1000, start: int = 0) -> Any:
    from pyspark.sql import functions as F

    return spark.range(start, start + n).select(
        F.col("id"),
        (F.col("id") * 0.5).alias("x"),
        F.when(F.col("id") % 3 == 0, None)
        .otherwise(F.concat(F.lit("k"), F.col("id")))
        .alias("kind"),
        F.timestamp_seconds(F.col("id") + 1_700_000_000).alias("at"),
        F.when(F.col("id") % 2 == 0, F.lit(DAY))
        .otherwise(F.lit(DAY + datetime.timedelta(1)))
        .alias("day"),
    )


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def engine(spark: Any, tmp_path: Path) -> DeltaRsEngine:
    return DeltaRsEngine(spark, str(tmp_path / "lake"))


def test_a_write_reads_back_identically_through_delta_rs(engine: DeltaRsEngine, spark: Any) -> None:
    result = engine.append(rows(spark), TARGET, Txn("load", 1))
    assert (result.version, result.rows, result.committed) == (0, 1000, True)

    table = deltalake.DeltaTable(engine.table_uri("things"))
    assert table.metadata().partition_columns == ["day"]
    arrow = table.to_pyarrow_table().sort_by("id")
    assert arrow.schema.field("day").type == pa.date32()
    assert arrow.schema.field("at").type == pa.timestamp("us", tz="UTC")
    expected = rows(spark).toPandas().sort_values("id").reset_index(drop=True)
    got = arrow.to_pandas()
    assert got["id"].tolist() == expected["id"].tolist()
    assert got["x"].tolist() == expected["x"].tolist()
    assert got["kind"].tolist() == expected["kind"].where(expected["kind"].notna(), None).tolist()
    assert [d for d in got["day"]] == list(expected["day"])
    assert list(got["at"].dt.tz_convert(None)) == list(expected["at"])

    back: Any = engine.read("things").orderBy("id").toPandas()
    assert back.columns.tolist() == ["id", "x", "kind", "at", "day"]
    assert back["day"].tolist() == expected["day"].tolist()
    assert back["x"].tolist() == expected["x"].tolist()


def test_the_same_transaction_twice_is_a_no_op(engine: DeltaRsEngine, spark: Any) -> None:
    engine.append(rows(spark), TARGET, Txn("load", 1))
    again = engine.append(rows(spark), TARGET, Txn("load", 1))
    assert (again.committed, again.version) == (False, 0)
    assert engine.read("things").count() == 1000
    assert engine.committed_version("things", "load") == 1
    assert not list((Path(engine.lake_uri) / "_staging").iterdir())


def test_a_write_with_another_schema_is_refused_and_changes_nothing(
    engine: DeltaRsEngine, spark: Any
) -> None:
    from pyspark.sql import functions as F

    engine.append(rows(spark), TARGET, Txn("load", 1))
    before = listing(Path(engine.table_uri("things")))
    wrong = rows(spark).withColumn("x", F.col("x").cast("string"))
    with pytest.raises(LakeError, match="column 'x' is PrimitiveType\\(\"string\"\\) but"):
        engine.append(wrong, TARGET, Txn("load", 2))
    assert engine.version("things") == 0
    assert listing(Path(engine.table_uri("things"))) == before


def test_a_task_failing_mid_write_leaves_the_table_and_its_folder_unchanged(
    engine: DeltaRsEngine, spark: Any
) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    engine.append(rows(spark), TARGET, Txn("load", 1))
    table_dir = Path(engine.table_uri("things"))
    before = listing(table_dir)

    @F.udf(DoubleType())
    def explode_late(x):  # type: ignore[no-untyped-def]
        if x > 40_000:  # well into the write: earlier batches are already in Parquet files
            raise RuntimeError("disk on fire")
        return x

    failing = rows(spark, 100_000, start=1000).withColumn("x", explode_late("x"))
    with pytest.raises(Exception, match="disk on fire"):
        engine.append(failing.repartition(2), TARGET, Txn("load", 2))
    assert engine.version("things") == 0
    assert listing(table_dir) == before
    assert not list((Path(engine.lake_uri) / "_staging").iterdir())


def test_routed_rows_reach_each_target_once(engine: DeltaRsEngine, spark: Any) -> None:
    from pyspark.sql import functions as F

    df = rows(spark).withColumn("route", F.when(F.col("id") < 100, "few").otherwise("many"))
    targets = {
        "few": Target("few", ["id", "day"], ["day"]),
        "many": Target("many", ["id", "x", "batch"], constants={"batch": "b7"}),
    }
    staged = engine.stage(df, targets, route_column="route")
    try:
        assert dict(staged.counts) == {"few": 100, "many": 900}
        staged.commit("few", Txn("t"))
        staged.commit("many", Txn("t"))
    finally:
        staged.discard()
    many = deltalake.DeltaTable(engine.table_uri("many")).to_pyarrow_table()
    assert many.num_rows == 900 and set(many.column("batch").to_pylist()) == {"b7"}
    assert deltalake.DeltaTable(engine.table_uri("few")).to_pyarrow_table().num_rows == 100


def test_time_travel_history_optimize_and_vacuum(engine: DeltaRsEngine, spark: Any) -> None:
    engine.append(rows(spark, 100), TARGET, Txn("load", 1))
    engine.append(rows(spark, 50, start=100), TARGET, Txn("load", 2))
    assert engine.read("things", version=0).count() == 100
    assert engine.read("things").count() == 150
    assert [h.version for h in engine.history("things")] == [1, 0]

    figures = engine.optimize("things")
    assert figures["numFilesRemoved"] > 0
    removed = engine.vacuum("things", retention_hours=0)
    assert removed, "vacuum removed the files optimize replaced"
    assert engine.read("things").count() == 150
    with pytest.raises(LakeError, match="has no version 99"):
        engine.read("things", version=99)


def test_a_table_with_unsupported_reader_features_is_refused(
    engine: DeltaRsEngine, tmp_path: Path
) -> None:
    deltalake.write_deltalake(
        engine.table_uri("dv"),
        pa.table({"a": [1, 2]}),
        configuration={"delta.enableDeletionVectors": "true"},
    )
    with pytest.raises(LakeError, match=r"deletionVectors.*PRECOMPUTE_LAKE_ENGINE=delta-spark"):
        engine.read("dv")


def test_delta_spark_without_its_jars_fails_at_start_saying_what_is_missing(spark: Any) -> None:
    with pytest.raises(LakeError, match=r"class io\.delta\.tables\.DeltaTable"):
        DeltaSparkEngine(spark, "/tmp/unused")


def test_delta_spark_engine_appends_once_and_reads_back(spark: Any, tmp_path: Path) -> None:
    try:
        engine = DeltaSparkEngine(spark, str(tmp_path / "lake"))
    except LakeError as exc:
        pytest.skip(f"io.delta JARs not on the classpath (Maven Central is unreachable): {exc}")
    engine.append(rows(spark), TARGET, Txn("load", 1))
    assert not engine.append(rows(spark), TARGET, Txn("load", 1)).committed
    assert deltalake.DeltaTable(engine.table_uri("things")).to_pyarrow_table().num_rows == 1000


def test_partition_values_use_delta_forms() -> None:
    assert partition_value(datetime.date(2026, 1, 2)) == "2026-01-02"
    assert partition_value(datetime.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02 03:04:05.000000"
    assert partition_value(None) is None
    assert os.sep == "/"
