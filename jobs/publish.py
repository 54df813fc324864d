"""Publish a scored run's predictions to the PostgreSQL serving tables, atomically.

Run with `precompute publish --run-id RUN` or `spark-submit jobs/publish.py`. The run's rows are
read from the Delta predictions table and copied by the Spark executors in parallel (COPY, one
connection per task) into a staging table readers cannot see; then one transaction makes them
visible: a full rescore (or a version not served yet) swaps in a new partition, an incremental
batch upserts into its version's partition (see `jobs.serving` for why each, and the
measurements in bench/README.md).

A rerun of a published run changes nothing. A publish that fails or is killed before its final
transaction leaves the served data exactly as it was; running it again completes it. The number
of rows made visible must equal the number scored, or the transaction is rolled back.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import psycopg2

from jobs import callbacks, predictions, serving
from jobs.lake import lake
from jobs.run_records import CountMismatch, RunInfo, RunRecorder, run_info
from jobs.run_report import write_report
from jobs.spark import spark_session
from precompute import rules, serving_store
from precompute.commands import job_main
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

COPY_CHUNK_BYTES = 1 << 20


class PublishInputError(PrecomputeError):
    """The run cannot be published: it was never recorded, or not scored yet."""


@dataclass(frozen=True)
class PublishResult:
    run_id: str
    rows_published: int
    strategy: str | None  # None when the run was already published
    seconds: dict[str, float]

    @property
    def already_published(self) -> bool:
        return self.strategy is None

    def summary(self) -> str:
        if self.already_published:
            return (
                f"run {self.run_id}: already published, nothing to do ({self.rows_published} rows)"
            )
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (
            f"run {self.run_id}: published {self.rows_published} rows by {self.strategy} "
            f"({timings})"
        )


def publish(spark: SparkSession, settings: Settings, db: Database, run_id: str) -> PublishResult:
    """Publish one scored run; see the module docstring."""
    info = run_info(db, run_id)
    if info is None:
        raise PublishInputError(
            f"no run {run_id!r} is recorded: score it first (`precompute score`)"
        )
    if info.rows_scored is None or info.scored_at is None or info.model_version_id is None:
        raise PublishInputError(
            f"run {run_id!r} has not been scored (state {info.state}): run its score stage first"
        )
    recorder = RunRecorder(
        db, run_id, info.mode, info.batch_id, lease_seconds=settings.stage_lease_seconds
    )
    recorder.start_stage("publish")
    try:
        result = _publish(spark, settings, db, info, recorder)
    except Exception as exc:
        recorder.finish_stage("publish", "failed", error=str(exc))
        write_report(settings, recorder.db, recorder.run_id)  # shows where it stopped
        raise
    recorder.finish_stage(
        "publish",
        "skipped" if result.already_published else "succeeded",
        rows_in=info.rows_scored,
        rows_out=result.rows_published,
        rows_rejected=info.rows_scored - result.rows_published,
    )
    if not result.already_published:
        _deliver_callbacks(db, settings)
    return result


def _publish(
    spark: SparkSession, settings: Settings, db: Database, info: RunInfo, recorder: RunRecorder
) -> PublishResult:
    # pyspark is heavy: imported only when a run is published.
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    url = db.url("writer")
    hint = db.hint
    assert info.scored_at is not None and info.model_version_id is not None
    assert info.rows_scored is not None
    published = serving.is_published(url, hint, info.run_id)
    if published is not None:
        recorder.record_published(published, info.rows_scored - published)
        return PublishResult(info.run_id, published, None, {})

    pub = serving.Publication(
        info.run_id, info.mode, info.model_version_id, info.scored_at, info.rows_scored
    )
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    planned = serving.prepare(url, hint, pub)
    try:
        rows = predictions.run_rows(lake(spark, settings), info.run_id, info.scored_at)
        # An entity id no lookup could serve (control characters, NUL which PostgreSQL refuses,
        # too long) is left out and counted, never a reason to refuse the rest of the batch.
        servable = rules.servable(F.col("entity_id"))
        left_out = Observation(f"publish-{info.run_id}")
        observed = rows.observe(left_out, F.count(F.when(~servable, 1)).alias("n"))
        copied = copy_rows(
            observed.where(servable).select(
                # Served as JSON ({class: probability}), written by Spark (exact doubles).
                *(
                    F.to_json(name).alias(name) if name == "probabilities" else F.col(name)
                    for name in serving_store.COPY_COLUMNS
                )
            ),
            url,
            serving.copy_statement(pub),
            settings.publish_streams or spark.sparkContext.defaultParallelism,
        )
        seconds["copy"] = time.perf_counter() - started
        unpublished = int(left_out.get["n"])
        if copied + unpublished != info.rows_scored:
            raise CountMismatch(
                f"run {info.run_id}: {info.rows_scored} rows were scored but the predictions "
                f"table holds {copied + unpublished} for it; nothing was published"
            )
        pub = dataclasses.replace(pub, rows_unpublished=unpublished)
        if unpublished:
            _report_unpublished(rows.where(~servable), unpublished, recorder)
        if planned == "swap":
            mark = time.perf_counter()
            serving.index(url, hint, pub)
            seconds["index"] = time.perf_counter() - mark
        mark = time.perf_counter()
        applied = serving.apply(url, hint, pub, planned)
        seconds["apply"] = time.perf_counter() - mark
    except serving.AlreadyPublished:
        _drop_quietly(url, hint, pub)
        published = serving.is_published(url, hint, info.run_id) or 0
        recorder.record_published(published, info.rows_scored - published)
        return PublishResult(info.run_id, published, None, {})
    except BaseException:
        _drop_quietly(url, hint, pub)
        raise
    recorder.record_published(applied.rows_published, unpublished)
    return PublishResult(info.run_id, applied.rows_published, applied.strategy, seconds)


def _report_unpublished(rows: DataFrame, count: int, recorder: RunRecorder) -> None:
    """Say which rows were left out, in the log and as a run metric analysts can query."""
    examples = [repr(r["entity_id"]) for r in rows.select("entity_id").limit(5).collect()]
    print(
        f"warning: {count} scored rows not published: their entity ids cannot be served "
        f"(control characters, or over {rules.ID_MAX_LENGTH} characters), e.g. "
        + ", ".join(examples),
        file=sys.stderr,
    )
    recorder.record_metrics({"unpublished_ids": (float(count), {"examples": examples})})


def _deliver_callbacks(db: Database, settings: Settings) -> None:
    """Post the results of score requests this publish answered, for a bounded time.

    The publish has committed and its stage is recorded: nothing a callback does (a receiver,
    the database going away) may fail it, so every error is reported and swallowed here. New
    deliveries start for PRECOMPUTE_CALLBACK_PUBLISH_SECONDS, and each one under way then ends
    within PRECOMPUTE_CALLBACK_TIMEOUT_SECONDS; the rest wait for the next deliverer.
    """
    try:
        policy = callbacks.CallbackPolicy.from_settings(settings)
        done = callbacks.deliver_due(db, policy, seconds=settings.callback_publish_seconds)
    except Exception as exc:
        print(f"warning: score request callbacks not delivered now: {exc}", file=sys.stderr)
        return
    if done != callbacks.Delivery(0, 0, 0):
        print(
            f"callbacks: {done.delivered} delivered, {done.retrying} to retry, "
            f"{done.failed} failed",
            file=sys.stderr,
        )


def _drop_quietly(url: str, hint: str, pub: serving.Publication) -> None:
    with contextlib.suppress(Exception):  # the retry drops it anyway; keep the real error
        serving.drop_staging(url, hint, pub)


def copy_rows(rows: DataFrame, url: str, statement: str, streams: int) -> int:
    """COPY the rows into PostgreSQL from the executors, one connection per task; rows copied.

    Each task's COPY commits on its own: the staging table is invisible to readers, and the
    caller checks the total before anything is published.
    """
    if rows.rdd.getNumPartitions() > streams:
        rows = rows.coalesce(streams)
    counts = rows.mapInArrow(partial(_copy_batches, url, statement), "rows long").collect()
    return sum(int(r["rows"]) for r in counts)


def _copy_batches(
    url: str, statement: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa  # heavy: loaded on the executors, by the tasks that copy

    stream = CsvStream(batches)
    connection = psycopg2.connect(url, connect_timeout=10)
    try:
        with connection, connection.cursor() as cursor:
            cursor.copy_expert(statement, stream, size=COPY_CHUNK_BYTES)
    finally:
        connection.close()
    yield pa.RecordBatch.from_pydict({"rows": [stream.rows]})


class CsvStream(io.RawIOBase):
    """Arrow record batches read as one CSV file, written a batch at a time as COPY asks."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        import pyarrow.csv as csv  # heavy: loaded on the executors, by the tasks that copy

        self._batches = batches
        self._options = csv.WriteOptions(include_header=False, quoting_style="needed")
        self._pending = bytearray()
        self.rows = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        import pyarrow.csv as csv  # heavy: as in __init__

        while size < 0 or len(self._pending) < size:
            batch = next(self._batches, None)
            if batch is None:
                break
            if batch.num_rows == 0:
                continue
            sink = io.BytesIO()
            # Strings are quoted and nulls are left empty, which COPY's CSV reads as NULL.
            csv.write_csv(batch, sink, self._options)
            self._pending += sink.getbuffer()
            self.rows += batch.num_rows
        if size < 0:
            size = len(self._pending)
        chunk = bytes(self._pending[:size])
        del self._pending[:size]
        return chunk


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", required=True, help="the scored run to publish")


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same arguments as `precompute publish`."""
    return job_main("publish", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    spark = spark_session(settings, "precompute-publish")
    db = Database.from_settings(settings)
    print(publish(spark, settings, db, args.run_id).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
