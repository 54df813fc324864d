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

This module is the stage: its arguments and run control. The rows come from `jobs.score_input`,
the executors score with `jobs.score_kernel`, and `jobs.score_records` writes (or, on a rerun,
repairs) what the run records.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs import bundle_store, predictions, score_requests
from jobs.lake import Lake, Txn, lake
from jobs.registry import ModelVersion, Registry
from jobs.run_records import CountMismatch, RunInfo, RunRecorder, run_info
from jobs.run_report import write_report
from jobs.score_input import ScoreInputError, input_rows, with_requests
from jobs.score_records import Scored, already_scored, record
from jobs.spark import spark_session
from precompute import names
from precompute.commands import job_main
from precompute.contracts import load_contract
from precompute.database import Database
from precompute.names import CHAMPION
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Mode = names.RunMode
Device = names.Device


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


def score(
    spark: SparkSession, settings: Settings, db: Database, request: ScoreRequest
) -> ScoreResult:
    """Score the rows the request names; see the module docstring."""
    if (request.mode == "incremental") != (request.batch_id is not None):
        raise ScoreInputError(
            "an incremental run needs --batch-id; a full or requests run takes none"
        )
    registry = Registry(db)
    if request.version is not None:
        version = registry.resolve(request.model, version=request.version)
    else:
        version = registry.resolve(request.model, alias=request.alias)
    run_id = request.run_id or names.run_id(
        request.mode, request.model, version.version, request.batch_id
    )
    recorder = RunRecorder(
        db, run_id, request.mode, request.batch_id, lease_seconds=settings.stage_lease_seconds
    )
    earlier = run_info(db, run_id)
    if earlier is not None and earlier.mode != request.mode:
        raise ScoreInputError(
            f"run {run_id} is a {earlier.mode} run; this request is {request.mode}: "
            "use another run id"
        )
    recorder.start_stage("score")
    try:
        scored, again = _score(spark, settings, db, request, version, recorder, earlier)
    except Exception as exc:
        recorder.finish_stage("score", "failed", error=str(exc))
        _release_requests(db, run_id)
        write_report(settings, recorder.db, recorder.run_id)  # shows where it stopped
        raise
    recorder.finish_stage(
        "score", "skipped" if again else "succeeded", rows_in=scored.rows, rows_out=scored.rows
    )
    return ScoreResult(
        run_id,
        version.model,
        version.version,
        version.version_id,
        scored.rows,
        scored.predictions_version,
        already_scored=again,
        psi=scored.psi,
    )


def _score(
    spark: SparkSession,
    settings: Settings,
    db: Database,
    request: ScoreRequest,
    version: ModelVersion,
    recorder: RunRecorder,
    done: RunInfo | None,
) -> tuple[Scored, bool]:
    """The run scored, or found scored already (True)."""
    # The bundle runtime loads numpy and pyarrow: imported only when a run scores.
    from jobs import score_kernel

    run_id = recorder.run_id
    engine = lake(spark, settings)
    txn = Txn(f"precompute.score:{run_id}")
    if engine.committed_version(predictions.TABLE, txn.app_id):
        return already_scored(engine, version, recorder, done), True
    if done is not None and done.model_version_id not in (None, version.version_id):
        raise ScoreInputError(
            f"run {run_id} was started with model version id {done.model_version_id}, not "
            f"{version.label}: use another run id"
        )

    content = bundle_store.load_bytes(version)  # refuses a bundle changed since registration
    scorer = score_kernel.batch_scorer(
        content,
        version.bundle_sha256,
        version.version_id,
        request.device or settings.scoring_device,
        version.input_schema["entity_id"]["name"],
    )
    rows, expected, requested = _rows(spark, settings, db, request, version, engine, recorder)
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
    done_now = record(engine, recorder, version, scored_at, commit.version, commit.rows, requested)
    return done_now, False


def _rows(
    spark: SparkSession,
    settings: Settings,
    db: Database,
    request: ScoreRequest,
    version: ModelVersion,
    engine: Lake,
    recorder: RunRecorder,
) -> tuple[DataFrame, int | None, int]:
    """The rows to score, how many there must be (None when nothing says), and how many of
    them are score requests."""
    schema = version.input_schema
    entity = schema["entity_id"]["name"]
    features = [f["name"] for f in schema["features"]]
    champion = CHAMPION in version.aliases  # requests are answered by the version lookups read
    if request.mode == "requests" and not champion:
        raise ScoreInputError(
            f"score requests are answered by the champion, and {version.label} is not it"
        )
    rows: DataFrame | None = None
    expected: int | None = None
    if request.mode != "requests":
        batch, expected = input_rows(
            engine, request.mode, request.batch_id, schema["dataset"], entity, recorder
        )
        rows = batch.select(entity, *features)
    requested = 0
    if champion:
        claimed = score_requests.claim(
            db,
            version.model,
            recorder.run_id,
            load_contract(settings.contracts_dir, schema["dataset"], schema["version"]),
            lease_seconds=settings.score_request_lease_seconds,
            max_attempts=settings.score_request_max_attempts,
        )
        rows, requested = with_requests(spark, rows, claimed.rows, entity, features)
    if rows is None:
        raise ScoreInputError(f"no pending score requests for {version.model}: nothing to do")
    if request.mode == "requests":
        return rows, requested, requested
    return rows, None if expected is None else expected + requested, requested


def _release_requests(db: Database, run_id: str) -> None:
    """A failed run gives back the score requests it claimed, for the next run to take."""
    # Best effort: the lease runs out anyway, and the run's own error is the one to report.
    with contextlib.suppress(Exception):
        score_requests.release(db, run_id)


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
    spark = spark_session(settings, "precompute-score")
    db = Database.from_settings(settings)
    print(score(spark, settings, db, request_from(args)).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
