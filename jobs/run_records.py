"""Run records in PostgreSQL: each stage's state, timing and row counts (writer role).

Every attempt of a stage is a row of its own, so a rerun that finds nothing to do (recorded as
skipped) keeps the attempt that did the work. A running attempt holds a lease its job renews
(`jobs.stage_leases`), so a killed job's attempt reads as abandoned and the next one takes over.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from psycopg2.extras import Json

from jobs.stage_leases import Heartbeat, Stage, start_attempt
from precompute.database import Database
from precompute.errors import PrecomputeError

StageState = Literal["succeeded", "failed", "skipped"]


class CountMismatch(PrecomputeError):
    """A stage's row counts do not add up with the stage before it."""


@dataclass(frozen=True)
class IngestCounts:
    read: int
    accepted: int
    quarantined: int
    # Quarantined rows per reason code (a row with several reasons counts under each, once per
    # code); None when not known (a run recorded before ingest counted them).
    reasons: Mapping[str, int] | None = None


# The run metric holding `IngestCounts.reasons`: value the rows quarantined, detail the counts.
QUARANTINE_REASONS = "quarantine_reasons"


@dataclass(frozen=True)
class RunInfo:
    """A run as recorded: what later stages need to know about the earlier ones."""

    run_id: str
    mode: str
    batch_id: str | None
    state: str
    model_version_id: int | None
    rows_accepted: int | None
    rows_scored: int | None
    rows_published: int | None
    scored_at: datetime.datetime | None
    predictions_version: int | None


def run_info(db: Database, run_id: str) -> RunInfo | None:
    """The run as recorded so far, None when it was never recorded."""
    rows = db.fetch(
        "writer",
        """
        SELECT run_id, mode, batch_id, state, model_version_id, rows_accepted, rows_scored,
               rows_published, scored_at, predictions_version
          FROM precompute.runs WHERE run_id = %s
        """,
        (run_id,),
    )
    return RunInfo(*rows[0]) if rows else None


class RunRecorder:
    """Writes one run's records; every call is its own short transaction. A stage it starts
    holds a lease of `lease_seconds`, renewed while the stage runs."""

    def __init__(
        self, db: Database, run_id: str, mode: str, batch_id: str | None, *, lease_seconds: float
    ) -> None:
        self.db = db
        self.lease = datetime.timedelta(seconds=lease_seconds)
        self.run_id = run_id
        self.mode = mode
        self.batch_id = batch_id
        self._attempts: dict[Stage, int] = {}
        self._heartbeats: dict[Stage, Heartbeat] = {}

    def _execute(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self.db.transaction("writer") as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def start_stage(self, stage: Stage) -> int:
        """Start a new attempt of the stage (see `stage_leases.start_attempt`) and its
        heartbeat; returns its attempt number."""
        attempt = start_attempt(self.db, self.run_id, self.mode, self.batch_id, stage, self.lease)
        self._attempts[stage] = attempt
        beat = Heartbeat(self.db, self.run_id, stage, attempt, self.lease)
        self._heartbeats[stage] = beat
        beat.start()
        return attempt

    def finish_stage(
        self,
        stage: Stage,
        state: StageState,
        *,
        rows_in: int | None = None,
        rows_out: int | None = None,
        rows_rejected: int | None = None,
        error: str | None = None,
    ) -> None:
        beat = self._heartbeats.pop(stage, None)
        if beat is not None:
            beat.stop()
        self._execute(
            """
            UPDATE precompute.run_stages
               SET state = %s, rows_in = %s, rows_out = %s, rows_rejected = %s, error = %s,
                   finished_at = now(), lease_until = NULL
             WHERE run_id = %s AND stage = %s AND attempt = %s
            """,
            (
                state,
                rows_in,
                rows_out,
                rows_rejected,
                error,
                self.run_id,
                stage,
                self._attempts[stage],
            ),
        )
        if state == "failed":
            self._execute(
                """
                UPDATE precompute.runs SET state = 'failed', error = %s, finished_at = now(),
                                           lease_until = NULL
                 WHERE run_id = %s
                """,
                (f"{stage}: {error}", self.run_id),
            )

    def record_check(self, *, passed: bool, error: str | None = None) -> None:
        """The after-publish check's outcome, as an attempt of its own; a failed check fails
        the run, saying why."""
        state = "succeeded" if passed else "failed"
        self._execute(
            """
            INSERT INTO precompute.run_stages
                (run_id, stage, state, attempt, error, started_at, finished_at)
            SELECT %s, 'check', %s, coalesce(max(attempt), 0) + 1, %s, now(), now()
              FROM precompute.run_stages WHERE run_id = %s AND stage = 'check'
            """,
            (self.run_id, state, error, self.run_id),
        )
        if not passed:
            self._execute(
                "UPDATE precompute.runs SET state = 'failed', error = %s WHERE run_id = %s",
                (f"check: {error}", self.run_id),
            )

    def record_ingest(self, counts: IngestCounts) -> None:
        """The run's ingest counts, and its quarantine reasons as a run metric; the table
        refuses counts that do not add up."""
        self._execute(
            """
            UPDATE precompute.runs
               SET rows_read = %s, rows_accepted = %s, rows_quarantined = %s
             WHERE run_id = %s
            """,
            (counts.read, counts.accepted, counts.quarantined, self.run_id),
        )
        if counts.reasons is not None:
            self.record_metrics(
                {QUARANTINE_REASONS: (float(counts.quarantined), dict(counts.reasons))}
            )

    def earlier_ingest(self) -> IngestCounts | None:
        """The counts of the run that ingested this batch before, if one recorded them."""
        rows = self._execute(
            """
            SELECT r.rows_read, r.rows_accepted, r.rows_quarantined,
                   (SELECT m.detail FROM precompute.run_metrics m
                     WHERE m.run_id = r.run_id AND m.name = %s)
              FROM precompute.runs r
             WHERE r.batch_id = %s AND r.rows_read IS NOT NULL
             ORDER BY r.created_at DESC LIMIT 1
            """,
            (QUARANTINE_REASONS, self.batch_id),
        )
        if not rows:
            return None
        read, accepted, quarantined = (int(v) for v in rows[0][:3])  # type: ignore[call-overload]
        reasons = rows[0][3]
        return IngestCounts(read, accepted, quarantined, reasons)  # type: ignore[arg-type]

    def record_score(
        self,
        model_version_id: int,
        scored_at: datetime.datetime,
        predictions_version: int,
        rows_scored: int,
        rows_requested: int = 0,
    ) -> None:
        self._execute(
            """
            UPDATE precompute.runs
               SET model_version_id = %s, scored_at = %s, predictions_version = %s,
                   rows_scored = %s, rows_requested = %s
             WHERE run_id = %s
            """,
            (
                model_version_id,
                scored_at,
                predictions_version,
                rows_scored,
                rows_requested,
                self.run_id,
            ),
        )

    def record_metrics(self, metrics: Mapping[str, tuple[float | None, Any]]) -> None:
        """Per-run figures, name -> (value, detail); a rerun replaces them."""
        with self.db.transaction("writer") as cursor:
            for name, (value, detail) in metrics.items():
                cursor.execute(
                    """
                    INSERT INTO precompute.run_metrics (run_id, name, value, detail)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (run_id, name) DO UPDATE
                       SET value = EXCLUDED.value, detail = EXCLUDED.detail, recorded_at = now()
                    """,
                    (self.run_id, name, value, Json(detail) if detail is not None else None),
                )

    def record_published(self, rows_published: int, rows_unpublished: int = 0) -> None:
        """The publish counts, and the run's success: publish is its last stage."""
        self._execute(
            """
            UPDATE precompute.runs
               SET rows_published = %s, rows_unpublished = %s, state = 'succeeded',
                   error = NULL, finished_at = now(), lease_until = NULL
             WHERE run_id = %s
            """,
            (rows_published, rows_unpublished, self.run_id),
        )
