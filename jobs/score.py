"""Score rows with a registered model and keep the predictions in the Delta history table.

Run with `precompute score` or `spark-submit jobs/score.py`. Three modes:

- incremental (`--batch-id`): the rows one ingested batch appended to the dataset's incoming
  table. Every accepted row of the batch must come out scored: the count is checked against what
  ingest recorded, and a difference fails the run before anything is written.
- full: every current entity, i.e. the latest row of each entity across all batches (a rescore
  with a new model version, for shadow scoring before a promotion).
- requests: only the model's pending asynchronous score requests, with the champion (what a
  scheduled run does when no new batch has landed).

The model is chosen by name and alias (champion by default) or version; its bundle is checked
against the registered checksum, then scored inside Spark (`mapInArrow`) on the GPU when one is
there and allowed, on the CPU otherwise. The predictions are appended to the `predictions` table
in one Delta transaction tagged with the run id, so a rerun of a scored run changes nothing. The
run's score distribution and its drift (PSI) against the model's training reference are recorded
as run metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from jobs.lake import Txn, lake
from jobs.run_records import CountMismatch, RunInfo, RunRecorder
from precompute import database, names
from precompute.commands import job_main
from precompute.errors import PrecomputeError
from precompute.names import CHAMPION
from precompute.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from jobs.lake import Lake
    from jobs.registry import ModelVersion, Registry

Mode = names.RunMode
Device = Literal["auto", "cpu", "gpu"]


class ScoreInputError(PrecomputeError):
    """There is nothing to score as asked: no such batch, no incoming table, a changed run."""


@dataclass(frozen=True)
class ScoreRequest:
    model: str
    mode: Mode = "incremental"
    batch_id: str | None = None
    alias: str | None = None
    version: int | None = None
    run_id: str | None = None
    device: Device | None = None


@dataclass(frozen=True)
class ScoreResult:
    run_id: str
    model: str
    version: int
    model_version_id: int
    rows_scored: int
    predictions_version: int
    already_scored: bool
    psi: float | None

    def summary(self) -> str:
        what = "already scored, nothing to do" if self.already_scored else "scored"
        drift = f", PSI {self.psi:.4f}" if self.psi is not None else ""
        return (
            f"run {self.run_id}: {what}: {self.rows_scored} rows with {self.model} "
            f"v{self.version}{drift} (predictions v{self.predictions_version})"
        )


def score(spark: SparkSession, settings: Settings, request: ScoreRequest) -> ScoreResult:
    """Score the rows the request names; see the module docstring."""
    from jobs.registry import Registry

    if (request.mode == "incremental") != (request.batch_id is not None):
        raise ScoreInputError(
            "an incremental run needs --batch-id; a full or requests run takes none"
        )
    registry = Registry(settings)
    if request.version is not None:
        version = registry.resolve(request.model, version=request.version)
    else:
        version = registry.resolve(request.model, alias=request.alias)
    run_id = request.run_id or names.run_id(
        request.mode, request.model, version.version, request.batch_id
    )
    recorder = RunRecorder(settings, run_id, request.mode, request.batch_id)
    earlier = recorder.info()
    if earlier is not None and earlier.mode != request.mode:
        raise ScoreInputError(
            f"run {run_id} is a {earlier.mode} run; this request is {request.mode}: "
            "use another run id"
        )
    recorder.start_stage("score")
    try:
        result = _score(spark, settings, request, registry, version, run_id, recorder, earlier)
    except Exception as exc:
        recorder.finish_stage("score", "failed", error=str(exc))
        _release_requests(settings, run_id)
        raise
    recorder.finish_stage(
        "score",
        "skipped" if result.already_scored else "succeeded",
        rows_in=result.rows_scored,
        rows_out=result.rows_scored,
    )
    return result


def _score(
    spark: SparkSession,
    settings: Settings,
    request: ScoreRequest,
    registry: Registry,
    version: ModelVersion,
    run_id: str,
    recorder: RunRecorder,
    done: RunInfo | None,
) -> ScoreResult:
    from jobs import predictions
    from jobs.bundle.format import read_bundle
    from jobs.bundle.program import build_program

    engine = lake(spark, settings)
    txn = Txn(f"precompute.score:{run_id}")
    if engine.committed_version(predictions.TABLE, txn.app_id):
        return _already_scored(engine, version, run_id, recorder, done)
    if done is not None and done.model_version_id not in (None, version.version_id):
        raise ScoreInputError(
            f"run {run_id} was started with model version id {done.model_version_id}, not "
            f"{version.label}: use another run id"
        )

    content = registry.load_bytes(version)  # refuses a bundle changed since registration
    bundle = read_bundle(content)
    build_program(bundle)  # refuses here, on the driver, what the executors could not run
    contract = version.input_schema
    features = [f["name"] for f in contract["features"]]
    entity = contract["entity_id"]["name"]
    if request.mode == "requests":
        if CHAMPION not in version.aliases:
            raise ScoreInputError(
                f"score requests are answered by the champion, and {version.label} is not it"
            )
        rows, requested = _with_requests(spark, settings, version, run_id, None, entity, features)
        if rows is None:
            raise ScoreInputError(f"no pending score requests for {version.model}: nothing to do")
        expected: int | None = requested
    else:
        rows, expected = _input_rows(engine, request, contract["dataset"], entity, recorder)
        rows = rows.select(entity, *features)
        requested = 0
        if CHAMPION in version.aliases:  # requests are answered by the version lookups read
            rows, requested = _with_requests(
                spark, settings, version, run_id, rows, entity, features
            )
            if expected is not None:
                expected += requested
    assert rows is not None  # given rows come back as rows; only requests alone can be None

    device = request.device or settings.scoring_device
    scorer = partial(
        _score_batches, content, version.bundle_sha256, version.version_id, device, entity
    )
    if expected is not None:
        # Counted on the input (cheap: no scoring); scoring keeps every row, one out per row in.
        found = rows.count()
        if found != expected:
            raise CountMismatch(
                f"run {run_id}: batch {request.batch_id} has {expected - requested} accepted "
                f"rows recorded by ingest and {requested} score requests, but {found} rows "
                "to score; nothing was written (has the incoming table been changed outside "
                "ingest?)"
            )
    scored = rows.mapInArrow(scorer, predictions.SCORED_SCHEMA)
    scored_at = datetime.datetime.now(datetime.UTC)
    target = predictions.target(version.model, version.version_id, run_id, scored_at)
    metadata = {
        "precompute.run_id": run_id,
        "precompute.model_version_id": str(version.version_id),
    }
    commit = engine.append(scored, target, txn, metadata)
    count = commit.rows
    recorder.record_score(version.version_id, scored_at, commit.version, count, requested)
    psi = _record_metrics(engine, version, run_id, scored_at, recorder)
    return ScoreResult(
        run_id,
        version.model,
        version.version,
        version.version_id,
        count,
        commit.version,
        already_scored=False,
        psi=psi,
    )


def _with_requests(
    spark: SparkSession,
    settings: Settings,
    version: ModelVersion,
    run_id: str,
    rows: DataFrame | None,
    entity: str,
    features: list[str],
) -> tuple[DataFrame | None, int]:
    """The rows plus the model's pending score requests for entities not among them (with no
    rows: the requests alone, None when there are none)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from jobs import score_requests
    from precompute.contracts import load_contract

    schema = version.input_schema
    contract = load_contract(settings.contracts_dir, schema["dataset"], schema["version"])
    claimed = score_requests.claim(
        database.database_url(settings, "writer"),
        database.unreachable_hint(settings),
        version.model,
        run_id,
        contract,
        lease_seconds=settings.score_request_lease_seconds,
        max_attempts=settings.score_request_max_attempts,
    )
    if claimed.rows is None:
        return rows, 0
    if rows is None:
        table = claimed.rows.select([entity, *features])
        return spark.createDataFrame(table), table.num_rows
    asked = spark.createDataFrame(claimed.rows.select([entity, *features]))
    # An entity in the batch is scored from the batch; its requests take that prediction.
    overlap = [
        r[0] for r in rows.select(entity).join(F.broadcast(asked.select(entity)), entity).collect()
    ]
    table = claimed.rows.select([entity, *features])
    if overlap:
        keep = pc.invert(pc.is_in(table.column(entity), value_set=pa.array(overlap)))
        table = table.filter(keep)
    if table.num_rows == 0:
        return rows, 0
    return rows.unionByName(spark.createDataFrame(table)), table.num_rows


def _release_requests(settings: Settings, run_id: str) -> None:
    """A failed run gives back the score requests it claimed, for the next run to take."""
    from jobs import score_requests

    # Best effort: the lease runs out anyway, and the run's own error is the one to report.
    with contextlib.suppress(Exception):
        score_requests.release(
            database.database_url(settings, "writer"), database.unreachable_hint(settings), run_id
        )


def _record_metrics(
    engine: Lake,
    version: ModelVersion,
    run_id: str,
    scored_at: datetime.datetime,
    recorder: RunRecorder,
) -> float | None:
    """The run's score distribution and drift, from its rows in the lake; returns the PSI."""
    from jobs import monitoring, predictions

    rows = predictions.run_rows(engine, run_id, scored_at)
    metrics = monitoring.run_metrics(rows, version.task, version.reference_scores)
    recorder.record_metrics(metrics)
    return metrics.get("psi", (None, None))[0]


def _already_scored(
    engine: Lake,
    version: ModelVersion,
    run_id: str,
    recorder: RunRecorder,
    done: RunInfo | None,
) -> ScoreResult:
    """A rerun of a scored run: report it, repairing its record if the first run could not."""
    from pyspark.sql import functions as F

    from jobs import predictions

    if done is None or done.rows_scored is None or done.scored_at is None:
        # The Delta commit happened but recording it did not (the database went away): the
        # predictions themselves say what the record must hold.
        count, scored_at, version_ids = (
            engine.read(predictions.TABLE)
            .where(F.col("run_id") == F.lit(run_id))
            .agg(F.count("*"), F.min("scored_at"), F.collect_set("model_version_id"))
            .first()  # type: ignore[misc]
        )
        if version_ids != [version.version_id]:
            raise ScoreInputError(
                f"run {run_id} holds predictions of model version ids {sorted(version_ids)} in "
                f"the lake, not {version.label}: use another run id"
            )
        counts = recorder.earlier_ingest() if done is not None and done.batch_id else None
        # The rows beyond the batch's accepted ones are the score requests the run took on.
        if counts is not None and count < counts.accepted:
            raise CountMismatch(
                f"run {run_id}: ingest recorded {counts.accepted} accepted rows but the lake "
                f"holds {count} predictions for the run"
            )
        requested = count - counts.accepted if counts is not None else 0
        # Spark hands timestamps back as naive local time.
        scored_at = scored_at.astimezone(datetime.UTC)
        table_version = engine.version(predictions.TABLE)
        recorder.record_score(version.version_id, scored_at, table_version, count, requested)
        psi = _record_metrics(engine, version, run_id, scored_at, recorder)
        return ScoreResult(
            run_id,
            version.model,
            version.version,
            version.version_id,
            count,
            table_version,
            already_scored=True,
            psi=psi,
        )
    if done.model_version_id != version.version_id:
        raise ScoreInputError(
            f"run {run_id} was scored with model version id {done.model_version_id}, not "
            f"{version.label}: use another run id"
        )
    return ScoreResult(
        run_id,
        version.model,
        version.version,
        version.version_id,
        done.rows_scored,
        done.predictions_version
        if done.predictions_version is not None
        else engine.version(predictions.TABLE),
        already_scored=True,
        psi=None,
    )


def _input_rows(
    engine: Lake, request: ScoreRequest, dataset: str, entity: str, recorder: RunRecorder
) -> tuple[DataFrame, int | None]:
    """The rows to score, and how many there must be (None when nothing says)."""
    from pyspark.sql import functions as F

    from jobs.ingest import ingest_txn
    from jobs.validation import incoming_table

    table = incoming_table(dataset)
    if not engine.exists(table):
        raise ScoreInputError(
            f"no incoming table for dataset {dataset!r} at {engine.table_uri(table)}: "
            "ingest a batch first (`precompute ingest`)"
        )
    incoming = engine.read(table)
    if request.mode == "full":
        # The latest row of each entity: the newest ingest wins, the batch id breaks ties.
        columns = [c for c in incoming.columns if c != entity]
        latest = F.max_by(F.struct(*columns), F.struct("ingested_at", "batch_id"))
        rows = incoming.groupBy(entity).agg(latest.alias("_r")).select(entity, "_r.*")
        return rows, None
    batch = request.batch_id
    assert batch is not None
    if not engine.committed_version(table, ingest_txn(dataset, batch).app_id):
        raise ScoreInputError(
            f"batch {batch!r} was not ingested into {table}: run `precompute ingest` for it "
            "first (or check the batch id)"
        )
    counts = recorder.earlier_ingest()
    if counts is not None:
        recorder.record_ingest(counts)  # the run's own row shows read = accepted + quarantined
    return incoming.where(F.col("batch_id") == F.lit(batch)), (counts.accepted if counts else None)


_PLANS: dict[tuple[str, int, str], Any] = {}  # per Python worker: compiled once, reused by tasks


def _score_batches(
    content: bytes,
    sha256: str,
    model_version_id: int,
    device: Device,
    entity: str,
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """The executor side: compile the bundle once per worker, score each Arrow batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.bundle.format import read_bundle
    from jobs.bundle.runtime import compile_bundle

    key = (sha256, model_version_id, device)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = compile_bundle(
            read_bundle(content), device, model_version_id=model_version_id, entity_id=entity
        )
    for batch in batches:
        if batch.num_rows == 0:
            continue
        out = plan.score(batch)
        if out.num_rows != batch.num_rows:  # the count check before the write relies on it
            raise AssertionError(f"scored {out.num_rows} rows of a batch of {batch.num_rows}")
        yield pa.RecordBatch.from_arrays(
            [pc.cast(out.column(0), pa.string()), out.column(1), out.column(2)],
            names=["entity_id", "score", "label"],
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", help="alias of the version to use (default: champion)")
    which.add_argument("--version", type=int, help="version number to use")
    parser.add_argument(
        "--mode",
        choices=["incremental", "full", "requests"],
        default="incremental",
        help="incremental: one ingested batch (--batch-id); full: every current entity; "
        "requests: only the pending score requests (with the champion)",
    )
    parser.add_argument("--batch-id", help="the ingested batch to score (incremental)")
    parser.add_argument(
        "--run-id",
        help="run to record on; reruns reuse it (default: score-BATCH-MODEL-vN, "
        "or rescore-MODEL-vN-TIME for a full run)",
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "gpu"], help="default: PRECOMPUTE_SCORING_DEVICE"
    )


def request_from(args: argparse.Namespace) -> ScoreRequest:
    return ScoreRequest(
        model=args.model,
        mode=args.mode,
        batch_id=args.batch_id,
        alias=args.alias,
        version=args.version,
        run_id=args.run_id,
        device=args.device,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same arguments as `precompute score`."""
    return job_main("score", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start Spark and score what the arguments name."""
    from jobs.spark import spark_session

    spark = spark_session(settings, "precompute-score")
    print(score(spark, settings, request_from(args)).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
