"""The rows a scoring run scores: one ingested batch's accepted rows (incremental) or the latest
row of every entity (full), and the pending score requests a champion run answers, merged in
(or alone, for a requests run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.ingest import ingest_txn
from jobs.lake import Lake
from jobs.run_records import RunRecorder
from jobs.validation import incoming_table
from precompute.errors import PrecomputeError
from precompute.names import RunMode

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession


class ScoreInputError(PrecomputeError):
    """There is nothing to score as asked: no such batch, no incoming table, a changed run."""


def input_rows(
    engine: Lake,
    mode: RunMode,
    batch_id: str | None,
    dataset: str,
    entity: str,
    recorder: RunRecorder,
) -> tuple[DataFrame, int | None]:
    """The rows to score, and how many there must be (None when nothing says)."""
    from pyspark.sql import functions as F  # pyspark is heavy: imported only when a run scores

    table = incoming_table(dataset)
    if not engine.exists(table):
        raise ScoreInputError(
            f"no incoming table for dataset {dataset!r} at {engine.table_uri(table)}: "
            "ingest a batch first (`precompute ingest`)"
        )
    incoming = engine.read(table)
    if mode == "full":
        # The latest row of each entity: the newest ingest wins, the batch id breaks ties.
        columns = [c for c in incoming.columns if c != entity]
        latest = F.max_by(F.struct(*columns), F.struct("ingested_at", "batch_id"))
        rows = incoming.groupBy(entity).agg(latest.alias("_r")).select(entity, "_r.*")
        return rows, None
    assert batch_id is not None
    if not engine.committed_version(table, ingest_txn(dataset, batch_id).app_id):
        raise ScoreInputError(
            f"batch {batch_id!r} was not ingested into {table}: run `precompute ingest` for it "
            "first (or check the batch id)"
        )
    counts = recorder.earlier_ingest()
    if counts is not None:
        recorder.record_ingest(counts)  # the run's own row shows read = accepted + quarantined
    rows = incoming.where(F.col("batch_id") == F.lit(batch_id))
    return rows, (counts.accepted if counts else None)


def with_requests(
    spark: SparkSession,
    rows: DataFrame | None,
    requests: pa.Table | None,
    entity: str,
    features: list[str],
) -> tuple[DataFrame | None, int]:
    """The rows plus the claimed requests for entities not among them, and how many requests
    that is (with no rows: the requests alone, None when there are none)."""
    # pyarrow and pyspark are heavy: imported only when a run scores.
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    if requests is None:
        return rows, 0
    table = requests.select([entity, *features])
    if rows is None:
        return spark.createDataFrame(table), table.num_rows
    asked = spark.createDataFrame(table)
    # An entity in the batch is scored from the batch; its requests take that prediction.
    overlap = [
        r[0] for r in rows.select(entity).join(F.broadcast(asked.select(entity)), entity).collect()
    ]
    if overlap:
        keep = pc.invert(pc.is_in(table.column(entity), value_set=pa.array(overlap)))
        table = table.filter(keep)
    if table.num_rows == 0:
        return rows, 0
    return rows.unionByName(spark.createDataFrame(table)), table.num_rows
