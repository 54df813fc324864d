"""Claiming score requests for a run: leases, attempts, and one request at a time converted.

Requests are inserted in the real database as the lookup API inserts them (any JSON its check
let through, and what an older or looser check let through), and claimed by the real claim.
The end-to-end path through Spark is in test_score_publish.py.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import create_database, drop_database, fetch_all
from psycopg2.extras import Json
from pydantic import SecretStr

from jobs import score_requests
from jobs.run_planning import pending_requests
from precompute import database, migrations
from precompute.contracts import Contract, parse_contract
from precompute.database import Database
from precompute.settings import Settings

MODEL = "events-model"
CONTRACT = """
name = "events"
version = 1

[entity_id]
name = "account"
type = "long"
nullable = false

[[features]]
name = "amount"
type = "double"
nullable = false

[[features]]
name = "count"
type = "long"
nullable = true
min = 0

[[features]]
name = "day"
type = "date"
nullable = true

[[features]]
name = "seen_at"
type = "timestamp"
nullable = true

[[features]]
name = "kind"
type = "string"
nullable = true
allowed = ["a", "b"]

[[features]]
name = "flag"
type = "boolean"
nullable = true
"""
GOOD = {
    "amount": 12.5,
    "count": 3,
    "day": "2026-11-30",
    "seen_at": "2026-11-30T10:00:00+02:00",
    "kind": "a",
    "flag": True,
}


@dataclass(frozen=True)
class Db:
    admin_url: str
    writer_url: str
    settings: Settings
    contract: Contract


@pytest.fixture(scope="module")
def db(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Db]:
    name = f"test_requests_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    migrations.migrate(url, settings)
    folder = tmp_path_factory.mktemp("contracts") / "events"
    folder.mkdir()
    (folder / "v1.toml").write_text(CONTRACT)
    contract = parse_contract(folder / "v1.toml")
    fetch_all(
        url,
        """
        INSERT INTO precompute.models (name, task) VALUES (%s, 'regression');
        INSERT INTO precompute.model_versions
            (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
        SELECT model_id, 1, 'linear_regression', 'file:///nowhere.zip', repeat('0', 64), %s
          FROM precompute.models;
        """,
        (MODEL, Json(contract.input_schema())),
    )
    job_settings = settings.model_copy(update={"database_url": SecretStr(url)})
    try:
        yield Db(url, database.with_role(url, "writer", settings), job_settings, contract)
    finally:
        drop_database(admin_url, name)


@pytest.fixture(autouse=True)
def no_requests(db: Db) -> None:
    fetch_all(db.admin_url, "DELETE FROM precompute.score_requests")


def submit(db: Db, entity_id: str, features: dict[str, Any]) -> str:
    """A request as the API stores it: the JSON as given, in the writer's INSERT."""
    rows = fetch_all(
        db.writer_url,
        """
        INSERT INTO precompute.score_requests (model_id, entity_id, features)
        SELECT model_id, %s, %s FROM precompute.models WHERE name = %s RETURNING request_id
        """,
        (entity_id, Json(features), MODEL),
    )
    return str(rows[0][0])


def new_run(db: Db, run_id: str) -> str:
    fetch_all(
        db.writer_url,
        "INSERT INTO precompute.runs (run_id, mode, state) VALUES (%s, 'requests', 'running')",
        (run_id,),
    )
    return run_id


def claim(db: Db, run_id: str, lease: float = 3600, attempts: int = 3) -> score_requests.Claimed:
    return score_requests.claim(
        Database.from_settings(db.settings),
        MODEL,
        run_id,
        db.contract,
        lease_seconds=lease,
        max_attempts=attempts,
    )


def state(db: Db, request_id: str) -> tuple[Any, ...]:
    rows = fetch_all(
        db.admin_url,
        "SELECT state, run_id, attempts, error, claimed_until > now() "
        "FROM precompute.score_requests WHERE request_id = %s",
        (request_id,),
    )
    return tuple(rows[0])


def test_a_request_that_cannot_be_converted_fails_alone_and_the_others_are_claimed(
    db: Db,
) -> None:
    good = [submit(db, "1", GOOD), submit(db, "2", GOOD | {"seen_at": "2026-11-30T10:00:00"})]
    bad = {
        # What the API refuses today, stored as if an earlier release had accepted it.
        "a long beyond 64 bits": (
            submit(db, "3", GOOD | {"count": 2**64}),
            "count: must be a long",
        ),
        "a double beyond floats": (
            submit(db, "4", GOOD | {"amount": 10**400}),
            "amount: must be a double",
        ),
        "a timestamp past year 9999 in UTC": (
            submit(db, "5", GOOD | {"seen_at": "9999-12-31T23:00:00-05:00"}),
            "seen_at: must be a timestamp",
        ),
        "an entity id that is not a long": (
            submit(db, "acct-6", GOOD),
            "account: must be a long",
        ),
        "an entity id beyond 64 bits": (
            submit(db, str(2**63), GOOD),
            "account: must be a long",
        ),
        "a date that is not one": (
            submit(db, "8", GOOD | {"day": "2026-02-30"}),
            "day: must be a date",
        ),
        # Stored before the contract said what it says now: the check at claim time refuses it.
        "a category the contract no longer allows": (
            submit(db, "9", GOOD | {"kind": "c"}),
            "features do not fit events/v1: kind: must be one of a, b",
        ),
    }
    run = new_run(db, "run-convert")

    claimed = claim(db, run)

    assert claimed.count == 2 and claimed.failed == len(bad)
    assert claimed.rows is not None
    assert claimed.rows.column("account").to_pylist() == [1, 2]
    assert claimed.rows.column("day").to_pylist() == [datetime.date(2026, 11, 30)] * 2
    assert claimed.rows.column("seen_at").to_pylist() == [
        datetime.datetime(2026, 11, 30, 8, tzinfo=datetime.UTC),  # +02:00 in UTC
        datetime.datetime(2026, 11, 30, 10, tzinfo=datetime.UTC),  # no offset: UTC
    ]
    for request_id in good:
        assert state(db, request_id) == ("scoring", run, 1, None, True)
    for what, (request_id, says) in bad.items():
        got, run_id, _, error, _ = state(db, request_id)
        assert (got, run_id) == ("failed", run), what
        assert error.startswith(("cannot be scored with events/v1", "features do not fit")), what
        assert says in error, (what, error)


def test_every_value_is_converted_on_its_own_whatever_json_it_is(db: Db) -> None:
    # What no check caught: anything JSON can hold, in any column.
    junk = {
        "amount": ({"nested": 1}, "amount: must be a double"),
        "count": (1.5, "count: must be a long"),  # never truncated to 1
        "day": ("next tuesday", "day: must be a date"),
        "seen_at": (17, "seen_at: must be a timestamp"),
        "kind": (["a"], "kind: must be one of a, b"),
        "flag": ("yes", "flag: must be a boolean"),
    }
    records = [(0, "10", GOOD)] + [
        (i, str(20 + i), GOOD | {name: value})
        for i, (name, (value, _)) in enumerate(junk.items(), 1)
    ]

    table, failed = score_requests.rows(db.contract, records)

    assert table is not None and table.column("account").to_pylist() == [10]
    reasons = dict((request_id, reason) for reason, request_id in failed)
    for i, (name, (_, says)) in enumerate(junk.items(), 1):
        assert says in reasons[i], (name, reasons[i])


def test_the_newest_request_for_an_entity_gives_its_row(db: Db) -> None:
    records = [(1, "7", GOOD | {"amount": 1.0}), (2, "7", GOOD | {"amount": 2.0})]
    table, failed = score_requests.rows(db.contract, records)
    assert failed == [] and table is not None
    assert table.column("amount").to_pylist() == [2.0]


def test_a_claim_is_a_lease_other_runs_wait_for(db: Db) -> None:
    request_id = submit(db, "1", GOOD)
    first, second = new_run(db, "run-lease-a"), new_run(db, "run-lease-b")

    assert claim(db, first).count == 1
    assert claim(db, second).count == 0  # the first run's lease holds
    assert pending_requests(Database.from_settings(db.settings), MODEL) == 0
    assert claim(db, first).count == 1  # a rerun of the same run takes its own back
    assert state(db, request_id) == ("scoring", first, 2, None, True)

    score_requests.release(Database.from_settings(db.settings), first)  # as a failing run does

    assert pending_requests(Database.from_settings(db.settings), MODEL) == 1
    assert claim(db, second).count == 1
    assert state(db, request_id) == ("scoring", second, 3, None, True)


def test_a_lease_that_ran_out_frees_the_request_for_the_next_run(db: Db) -> None:
    request_id = submit(db, "1", GOOD)
    gone, next_run = new_run(db, "run-died"), new_run(db, "run-after")

    assert claim(db, gone, lease=0).count == 1  # a run that then dies without a word
    assert claim(db, next_run).count == 1
    assert state(db, request_id)[:3] == ("scoring", next_run, 2)


def test_a_request_claimed_too_often_fails_and_no_longer_holds_up_runs(db: Db) -> None:
    poison = submit(db, "1", GOOD)
    runs = [new_run(db, f"run-poison-{i}") for i in range(3)]
    for run in runs[:2]:
        assert claim(db, run, lease=0, attempts=2).count == 1  # each run fails, somehow
    fresh = submit(db, "2", GOOD)

    claimed = claim(db, runs[2], attempts=2)

    assert claimed.count == 1 and claimed.failed == 1
    assert claimed.rows is not None and claimed.rows.column("account").to_pylist() == [2]
    got, _, attempts, error, _ = state(db, poison)
    assert (got, attempts) == ("failed", 2)
    assert error == (
        "scoring was tried 2 times and no run published it (the last was run-poison-1); "
        "it is not tried again"
    )
    assert state(db, fresh)[:3] == ("scoring", runs[2], 1)
