"""Run records in PostgreSQL: each stage's state, timing and row counts (writer role).

Every attempt of a stage is a row of its own, so a rerun that finds nothing to do (recorded as
skipped) keeps the attempt that did the work. While a stage runs, a thread renews its lease and
its run's (the heartbeat, every third of `PRECOMPUTE_STAGE_LEASE_SECONDS`): a job that is killed
stops renewing, its attempt reads as abandoned once the lease is over, and the next attempt of
the stage takes over. An attempt whose lease is still live makes a second one refuse to start.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2
from psycopg2.extras import Json

from precompute import database
from precompute.errors import PrecomputeError
from precompute.process_identity import start_time
from precompute.settings import Settings

Stage = Literal["ingest", "score", "publish", "check"]
StageState = Literal["succeeded", "failed", "skipped"]


class CountMismatch(PrecomputeError):
    """A stage's row counts do not add up with the stage before it."""


class StageBusy(PrecomputeError):
    """Another attempt of the stage is running and renewing its lease."""


@dataclass(frozen=True)
class IngestCounts:
    read: int
    accepted: int
    quarantined: int


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


class RunRecorder:
    """Writes one run's records; every call is its own short transaction."""

    def __init__(self, settings: Settings, run_id: str, mode: str, batch_id: str | None) -> None:
        self.url = database.database_url(settings, "writer")
        self.hint = database.unreachable_hint(settings)
        self.lease = datetime.timedelta(seconds=settings.stage_lease_seconds)
        self.run_id = run_id
        self.mode = mode
        self.batch_id = batch_id
        self._attempts: dict[Stage, int] = {}
        self._heartbeats: dict[Stage, _Heartbeat] = {}

    def _execute(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with database.transaction(self.url, hint=self.hint) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def start_stage(self, stage: Stage) -> int:
        """Mark the run running and start a new attempt of the stage, taking over from an
        abandoned one; returns its attempt number. Refuses while another attempt is live."""
        with database.transaction(self.url, hint=self.hint) as cur:
            cur.execute(
                """
                INSERT INTO precompute.runs (run_id, mode, batch_id, state, started_at, lease_until)
                VALUES (%s, %s, %s, 'running', now(), now() + %s)
                ON CONFLICT (run_id) DO UPDATE
                   SET state = 'running', error = NULL, finished_at = NULL,
                       lease_until = EXCLUDED.lease_until,
                       started_at = coalesce(runs.started_at, now())
                """,
                (self.run_id, self.mode, self.batch_id, self.lease),
            )
            # Serialise attempts of one stage of one run on the run's row.
            cur.execute(
                "SELECT 1 FROM precompute.runs WHERE run_id = %s FOR UPDATE", (self.run_id,)
            )
            cur.execute(
                """
                UPDATE precompute.run_stages
                   SET state = 'abandoned', finished_at = lease_until,
                       error = 'its job stopped renewing its lease (killed or lost)'
                 WHERE run_id = %s AND stage = %s AND state = 'running' AND lease_until < now()
                """,
                (self.run_id, stage),
            )
            cur.execute(
                """
                SELECT attempt, started_at, lease_until, holder FROM precompute.run_stages
                 WHERE run_id = %s AND stage = %s AND state = 'running'
                """,
                (self.run_id, stage),
            )
            live = cur.fetchone()
            if live is not None and not _holder_alive(live[3]):
                # Its process on this host is gone: no need to wait for the lease to end.
                cur.execute(
                    """
                    UPDATE precompute.run_stages
                       SET state = 'abandoned', finished_at = now(),
                           error = 'its job exited without finishing (killed)'
                     WHERE run_id = %s AND stage = %s AND attempt = %s
                    """,
                    (self.run_id, stage, live[0]),
                )
                live = None
            if live is not None:
                raise StageBusy(
                    f"run {self.run_id}: attempt {live[0]} of its {stage} stage is running "
                    f"(started {live[1]:%Y-%m-%d %H:%M:%S}, lease until "
                    f"{live[2]:%H:%M:%S}): wait for it, or for its lease to end if it died"
                )
            cur.execute(
                """
                INSERT INTO precompute.run_stages
                    (run_id, stage, state, attempt, lease_until, holder)
                SELECT %s, %s, 'running', coalesce(max(attempt), 0) + 1, now() + %s, %s
                  FROM precompute.run_stages WHERE run_id = %s AND stage = %s
                RETURNING attempt
                """,
                (self.run_id, stage, self.lease, this_process(), self.run_id, stage),
            )
            attempt = int(cur.fetchone()[0])
        self._attempts[stage] = attempt
        beat = _Heartbeat(self, stage, attempt)
        self._heartbeats[stage] = beat
        beat.start()
        return attempt

    def renew(self, stage: Stage, attempt: int) -> None:
        """Extend the running attempt's lease and its run's."""
        self._execute(
            """
            WITH stage AS (
                UPDATE precompute.run_stages SET lease_until = now() + %s
                 WHERE run_id = %s AND stage = %s AND attempt = %s AND state = 'running'
            )
            UPDATE precompute.runs SET lease_until = now() + %s
             WHERE run_id = %s AND state = 'running'
            """,
            (self.lease, self.run_id, stage, attempt, self.lease, self.run_id),
        )

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
        """The run's ingest counts; the table refuses counts that do not add up."""
        self._execute(
            """
            UPDATE precompute.runs
               SET rows_read = %s, rows_accepted = %s, rows_quarantined = %s
             WHERE run_id = %s
            """,
            (counts.read, counts.accepted, counts.quarantined, self.run_id),
        )

    def earlier_ingest(self) -> IngestCounts | None:
        """The counts of the run that ingested this batch before, if one recorded them."""
        rows = self._execute(
            """
            SELECT rows_read, rows_accepted, rows_quarantined FROM precompute.runs
             WHERE batch_id = %s AND rows_read IS NOT NULL
             ORDER BY created_at DESC LIMIT 1
            """,
            (self.batch_id,),
        )
        if not rows:
            return None
        read, accepted, quarantined = (int(v) for v in rows[0])  # type: ignore[call-overload]
        return IngestCounts(read, accepted, quarantined)

    def info(self) -> RunInfo | None:
        """The run as recorded so far, None when it was never recorded."""
        rows = self._execute(
            """
            SELECT run_id, mode, batch_id, state, model_version_id, rows_accepted, rows_scored,
                   rows_published, scored_at, predictions_version
              FROM precompute.runs WHERE run_id = %s
            """,
            (self.run_id,),
        )
        return RunInfo(*rows[0]) if rows else None  # type: ignore[arg-type]

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
        with database.transaction(self.url, hint=self.hint) as cursor:
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


def this_process() -> str:
    """host:pid:start time of this process: a PID is reused, a PID with its start time is not."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid)}"


def _holder_alive(holder: str | None) -> bool:
    """Whether the process that holds an attempt still runs; True when that cannot be told
    from here (another host, or no holder recorded): then its lease decides."""
    host, _, rest = (holder or "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return start_time(int(pid)) == started


class _Heartbeat(threading.Thread):
    """Renews a running attempt's lease until stopped; a failed renewal is tried again at the
    next beat (the lease is three beats long)."""

    def __init__(self, recorder: RunRecorder, stage: Stage, attempt: int) -> None:
        super().__init__(name=f"heartbeat-{stage}", daemon=True)
        self.recorder = recorder
        self.stage = stage
        self.attempt = attempt
        self._stopped = threading.Event()

    def run(self) -> None:
        every = self.recorder.lease.total_seconds() / 3
        while not self._stopped.wait(every):
            # The database away for now is no reason to stop: the lease covers two more beats.
            with contextlib.suppress(PrecomputeError, psycopg2.Error):
                self.recorder.renew(self.stage, self.attempt)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
