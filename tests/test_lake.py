"""Delta tables through delta-spark: one transaction per write, idempotent, schema-enforced, and
readable by other Delta readers (delta-rs, polars)."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pyarrow as pa
import pytest

from jobs.jars import JarsMissing
from jobs.lake import Lake, LakeError, Target, Txn
from jobs.spark import spark_conf
from precompute.settings import Settings

DAY = datetime.date(2026, 11, 20)
TARGET = Target("things", ["id", "x", "kind", "at", "day"], partition_by=["day"])
LEGACY_LAKE = Path(__file__).parent / "fixtures" / "legacy_lake"


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


@pytest.fixture
def engine(spark: Any, tmp_path: Path) -> Lake:
    return Lake(spark, str(tmp_path / "lake"))


def test_a_write_reads_back_identically_through_delta_rs_and_polars(
    engine: Lake, spark: Any
) -> None:
    result = engine.append(rows(spark), TARGET, Txn("load", 1))
    assert (result.version, result.rows, result.committed) == (0, 1000, True)
    expected = rows(spark).toArrow().sort_by("id")

    table = deltalake.DeltaTable(engine.table_uri("things"))
    assert table.metadata().partition_columns == ["day"]
    through_rs = pa.table(table.to_pyarrow_table()).sort_by("id").select(expected.column_names)
    assert through_rs.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert through_rs.schema.field("day").type == pa.date32()
    assert through_rs.to_pylist() == expected.to_pylist()

    through_polars = pl.read_delta(engine.table_uri("things")).sort("id")
    assert through_polars.columns == ["id", "x", "kind", "at", "day"]
    assert through_polars.to_arrow().to_pylist() == expected.to_pylist()

    back = engine.read("things").orderBy("id").toArrow()
    assert back.column_names == ["id", "x", "kind", "at", "day"]
    assert back.to_pylist() == expected.to_pylist()


def test_nested_columns_read_back_through_other_readers(engine: Lake, spark: Any) -> None:
    from pyspark.sql import functions as F

    reason = F.struct(F.lit("out_of_range").alias("code"), F.lit("age").alias("column"))
    df = spark.range(3).select(
        F.col("id"), F.when(F.col("id") > 0, F.array(reason)).alias("reasons")
    )
    engine.append(df, Target("nested", ["id", "reasons"]), Txn("n"))
    expected = [
        {"id": 0, "reasons": None},
        {"id": 1, "reasons": [{"code": "out_of_range", "column": "age"}]},
        {"id": 2, "reasons": [{"code": "out_of_range", "column": "age"}]},
    ]
    uri = engine.table_uri("nested")
    assert pa.table(deltalake.DeltaTable(uri).to_pyarrow_table()).sort_by("id").to_pylist() == (
        expected
    )
    assert pl.read_delta(uri).sort("id").to_dicts() == expected


def test_the_same_transaction_twice_is_a_no_op(engine: Lake, spark: Any) -> None:
    engine.append(rows(spark), TARGET, Txn("load", 1))
    files = sorted(Path(engine.table_uri("things")).rglob("*.parquet"))
    again = engine.append(rows(spark), TARGET, Txn("load", 1))
    assert (again.committed, again.version) == (False, 0)
    assert engine.read("things").count() == 1000
    assert engine.committed_version("things", "load") == 1
    # delta-rs and Spark's own log read agree (Spark's is the way for stores delta-rs cannot read).
    assert engine._committed_version_by_spark("things", "load") == 1
    assert engine.committed_version("things", "other") is None
    assert engine._committed_version_by_spark("things", "other") is None
    assert engine.committed_version("missing", "load") is None
    # The transaction is checked before writing, so a rerun writes no files either.
    assert sorted(Path(engine.table_uri("things")).rglob("*.parquet")) == files


def test_a_write_with_another_schema_is_refused_and_changes_nothing(
    engine: Lake, spark: Any
) -> None:
    from pyspark.sql import functions as F

    engine.append(rows(spark), TARGET, Txn("load", 1))
    wrong = rows(spark).withColumn("x", F.col("x").cast("string"))
    with pytest.raises(LakeError, match=r"cannot append to .*things: .*x"):
        engine.append(wrong, TARGET, Txn("load", 2))
    assert engine.version("things") == 0
    assert engine.read("things").count() == 1000


def test_a_task_failing_mid_write_leaves_the_table_unchanged(engine: Lake, spark: Any) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    engine.append(rows(spark), TARGET, Txn("load", 1))

    @F.udf(DoubleType())
    def explode_late(x):  # type: ignore[no-untyped-def]
        if x > 40_000:  # well into the write: earlier batches are already in Parquet files
            raise RuntimeError("disk on fire")
        return x

    failing = rows(spark, 100_000, start=1000).withColumn("x", explode_late("x"))
    with pytest.raises(Exception, match="disk on fire"):
        engine.append(failing.repartition(2), TARGET, Txn("load", 2))
    assert engine.version("things") == 0
    assert engine.committed_version("things", "load") == 1
    assert engine.read("things").count() == 1000


def test_time_travel_history_optimize_with_z_order_and_vacuum(engine: Lake, spark: Any) -> None:
    engine.append(rows(spark, 100), TARGET, Txn("load", 1), {"precompute.batch_id": "b1"})
    engine.append(rows(spark, 50, start=100), TARGET, Txn("load", 2))
    assert engine.read("things", version=0).count() == 100
    assert engine.read("things").count() == 150
    history = engine.history("things")
    assert [h.version for h in history] == [1, 0]
    assert history[1].user_metadata == {"precompute.batch_id": "b1"}

    figures = engine.optimize("things", zorder_by=["id"])
    assert figures["numFilesRemoved"] > figures["numFilesAdded"] > 0
    assert engine.history("things", 1)[0].operation == "OPTIMIZE"
    removed = engine.vacuum("things", retention_hours=0)
    assert removed >= figures["numFilesRemoved"], "vacuum removed the files optimize replaced"
    assert engine.read("things").count() == 150
    with pytest.raises(LakeError, match="has no version 99"):
        engine.read("things", version=99)


def test_a_lake_written_by_the_previous_release_is_read_and_appended_to(
    spark: Any, tmp_path: Path
) -> None:
    """The fixture was written by the delta-rs engine this project used before delta-spark."""
    shutil.copytree(LEGACY_LAKE, tmp_path / "lake")
    engine = Lake(spark, str(tmp_path / "lake"))
    for table in ("incoming/customers", "quarantine", "predictions"):
        through_rs = deltalake.DeltaTable(engine.table_uri(table)).to_pyarrow_table()
        through_spark = engine.read(table).toArrow().select(through_rs.column_names)
        key = "customer_id" if table.startswith("incoming") else "entity_id"
        assert through_spark.sort_by(key).to_pylist() == through_rs.sort_by(key).to_pylist()
    assert engine.committed_version("incoming/customers", "precompute.ingest:customers:b1") == 1

    quarantine = engine.read("quarantine")
    added = engine.append(
        quarantine.limit(1), Target("quarantine", quarantine.columns, ["ingest_date"]), Txn("b2")
    )
    assert (added.version, added.rows) == (1, 1)
    assert pl.read_delta(engine.table_uri("quarantine")).height == 5


def test_a_session_without_the_jars_is_told_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(JarsMissing, match=r"the delta JARs are not in .*run `make setup`"):
        spark_conf(Settings(jars_dir=tmp_path), "job", None)
