"""Run records on the real PostgreSQL: attempts are kept, and a live attempt of a stage is not
run twice at once."""

from __future__ import annotations

import time

import pytest
from conftest import fetch_all
from pydantic import SecretStr

from jobs.run_records import RunRecorder
from jobs.stage_leases import StageBusy
from precompute.database import Database
from precompute.settings import Settings


def test_a_second_attempt_waits_for_a_live_one_and_takes_over_a_dead_one(
    settings: Settings, jobs_database: str
) -> None:
    db = Database.from_settings(
        settings.model_copy(update={"database_url": SecretStr(jobs_database)})
    )
    first = RunRecorder(db, "busy-run", "full", None, lease_seconds=3)
    assert first.start_stage("score") == 1
    time.sleep(4)  # beyond the lease: the heartbeat kept renewing it
    with pytest.raises(StageBusy, match=r"attempt 1 of its score stage is running"):
        RunRecorder(db, "busy-run", "full", None, lease_seconds=3).start_stage("score")
    # The first job dies without a word: its heartbeat stops with it.
    first._heartbeats["score"].stop()
    time.sleep(3.5)
    second = RunRecorder(db, "busy-run", "full", None, lease_seconds=3)
    assert second.start_stage("score") == 2
    second.finish_stage("score", "succeeded", rows_in=7, rows_out=7)
    assert fetch_all(
        jobs_database,
        "SELECT attempt, state FROM precompute.run_stages "
        "WHERE run_id = 'busy-run' ORDER BY attempt",
    ) == [(1, "abandoned"), (2, "succeeded")]
    assert fetch_all(
        jobs_database, "SELECT state, attempt FROM analytics.run_stages WHERE run_id = 'busy-run'"
    ) == [("succeeded", 2)]
