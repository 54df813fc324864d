"""Leases on running stage attempts, so that an attempt whose job was killed is taken over and a
live one is never run twice at once.

An attempt starts holding a lease on itself and its run; while its job runs, a heartbeat thread
renews both every third of `PRECOMPUTE_STAGE_LEASE_SECONDS`. A job that is killed stops
renewing: once its lease is over (at once, when its process on this host is gone) the next
attempt of the stage marks it abandoned and takes over. An attempt whose lease is still live
makes a second one refuse to start.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
from typing import Literal

import psycopg2

from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.process_identity import start_time

Stage = Literal["ingest", "score", "publish", "check"]


class StageBusy(PrecomputeError):
    """Another attempt of the stage is running and renewing its lease."""


def start_attempt(
    db: Database,
    run_id: str,
    mode: str,
    batch_id: str | None,
    stage: Stage,
    lease: datetime.timedelta,
) -> int:
    """Mark the run running and start a new attempt of the stage, taking over from an abandoned
    one; returns its attempt number. Refuses while another attempt is live."""
    with db.transaction("writer") as cur:
        cur.execute(
            """
            INSERT INTO precompute.runs (run_id, mode, batch_id, state, started_at, lease_until)
            VALUES (%s, %s, %s, 'running', now(), now() + %s)
            ON CONFLICT (run_id) DO UPDATE
               SET state = 'running', error = NULL, finished_at = NULL,
                   lease_until = EXCLUDED.lease_until,
                   started_at = coalesce(runs.started_at, now())
            """,
            (run_id, mode, batch_id, lease),
        )
        # Serialise attempts of one stage of one run on the run's row.
        cur.execute("SELECT 1 FROM precompute.runs WHERE run_id = %s FOR UPDATE", (run_id,))
        cur.execute(
            """
            UPDATE precompute.run_stages
               SET state = 'abandoned', finished_at = lease_until,
                   error = 'its job stopped renewing its lease (killed or lost)'
             WHERE run_id = %s AND stage = %s AND state = 'running' AND lease_until < now()
            """,
            (run_id, stage),
        )
        cur.execute(
            """
            SELECT attempt, started_at, lease_until, holder FROM precompute.run_stages
             WHERE run_id = %s AND stage = %s AND state = 'running'
            """,
            (run_id, stage),
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
                (run_id, stage, live[0]),
            )
            live = None
        if live is not None:
            raise StageBusy(
                f"run {run_id}: attempt {live[0]} of its {stage} stage is running "
                f"(started {live[1]:%Y-%m-%d %H:%M:%S}, lease until "
                f"{live[2]:%H:%M:%S}): wait for it, or for its lease to end if it died"
            )
        cur.execute(
            """
            INSERT INTO precompute.run_stages (run_id, stage, state, attempt, lease_until, holder)
            SELECT %s, %s, 'running', coalesce(max(attempt), 0) + 1, now() + %s, %s
              FROM precompute.run_stages WHERE run_id = %s AND stage = %s
            RETURNING attempt
            """,
            (run_id, stage, lease, this_process(), run_id, stage),
        )
        return int(cur.fetchone()[0])


def renew(db: Database, run_id: str, stage: Stage, attempt: int, lease: datetime.timedelta) -> None:
    """Extend the running attempt's lease and its run's."""
    with db.transaction("writer") as cur:
        cur.execute(
            """
            WITH stage AS (
                UPDATE precompute.run_stages SET lease_until = now() + %s
                 WHERE run_id = %s AND stage = %s AND attempt = %s AND state = 'running'
            )
            UPDATE precompute.runs SET lease_until = now() + %s
             WHERE run_id = %s AND state = 'running'
            """,
            (lease, run_id, stage, attempt, lease, run_id),
        )


class Heartbeat(threading.Thread):
    """Renews a running attempt's lease until stopped; a failed renewal is tried again at the
    next beat (the lease is three beats long)."""

    def __init__(
        self, db: Database, run_id: str, stage: Stage, attempt: int, lease: datetime.timedelta
    ) -> None:
        super().__init__(name=f"heartbeat-{stage}", daemon=True)
        self.db = db
        self.run_id = run_id
        self.stage: Stage = stage
        self.attempt = attempt
        self.lease = lease
        self._stopped = threading.Event()

    def run(self) -> None:
        every = self.lease.total_seconds() / 3
        while not self._stopped.wait(every):
            # The database away for now is no reason to stop: the lease covers two more beats.
            with contextlib.suppress(PrecomputeError, psycopg2.Error):
                renew(self.db, self.run_id, self.stage, self.attempt, self.lease)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


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
