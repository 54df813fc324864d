"""What a scoring run records about itself: the rows it scored, the predictions table version
and its score metrics (distribution, drift); and, for a rerun of a run already in the lake,
that record checked against the predictions and repaired from them when the first run could not
write it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from jobs import predictions
from jobs.lake import Lake
from jobs.registry import ModelVersion
from jobs.run_records import CountMismatch, RunInfo, RunRecorder
from jobs.score_input import ScoreInputError


@dataclass(frozen=True)
class Scored:
    """A scored run as recorded."""

    rows: int
    predictions_version: int
    psi: float | None  # None when not measured (a rerun that found its record complete)


def record(
    engine: Lake,
    recorder: RunRecorder,
    version: ModelVersion,
    scored_at: datetime.datetime,
    predictions_version: int,
    rows: int,
    requested: int,
) -> Scored:
    """Record the scored run and its metrics, measured on its rows in the lake."""
    # numpy is heavy (jobs.monitoring): imported only when a run is measured.
    from jobs import monitoring

    run_id = recorder.run_id
    recorder.record_score(version.version_id, scored_at, predictions_version, rows, requested)
    scores = predictions.run_rows(engine, run_id, scored_at)
    metrics = monitoring.run_metrics(scores, version.task, version.reference_scores)
    recorder.record_metrics(metrics)
    return Scored(rows, predictions_version, metrics.get("psi", (None, None))[0])


def already_scored(
    engine: Lake, version: ModelVersion, recorder: RunRecorder, done: RunInfo | None
) -> Scored:
    """A rerun of a scored run: what it holds, its record repaired if the first run could not
    write it."""
    # pyspark is heavy: imported only when a run scores.
    from pyspark.sql import functions as F

    run_id = recorder.run_id
    if done is not None and done.rows_scored is not None and done.scored_at is not None:
        if done.model_version_id != version.version_id:
            raise ScoreInputError(
                f"run {run_id} was scored with model version id {done.model_version_id}, not "
                f"{version.label}: use another run id"
            )
        table_version = done.predictions_version
        if table_version is None:
            table_version = engine.version(predictions.TABLE)
        return Scored(done.rows_scored, table_version, psi=None)
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
    return record(engine, recorder, version, scored_at, table_version, count, requested)
