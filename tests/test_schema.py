"""Behaviour the schema itself guarantees, whichever code writes to it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import errors

from precompute import database, migrations
from precompute.settings import Settings


@pytest.fixture
def writer(fresh_database: str, settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    migrations.migrate(fresh_database, settings)
    conn = database.connect(database.with_role(fresh_database, "writer", settings))
    conn.autocommit = True
    yield conn
    conn.close()


def register(cur: psycopg2.extensions.cursor, model: str, versions: int) -> list[int]:
    cur.execute(
        "INSERT INTO precompute.models (name, task) VALUES (%s, 'classification')"
        " ON CONFLICT (name) DO NOTHING",
        (model,),
    )
    ids = []
    for number in range(1, versions + 1):
        cur.execute(
            """
            INSERT INTO precompute.model_versions
                (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
            SELECT model_id, %s, 'logistic_regression', %s, repeat('a', 64), '{}'
            FROM precompute.models WHERE name = %s
            RETURNING version_id
            """,
            (number, f"file:///models/{model}/{number}", model),
        )
        row = cur.fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def test_every_alias_move_is_recorded_in_its_transaction(
    writer: psycopg2.extensions.connection,
) -> None:
    with writer.cursor() as cur:
        v1, v2 = register(cur, "churn", 2)
        cur.execute(
            "INSERT INTO precompute.model_aliases (model_id, alias, version_id)"
            " SELECT model_id, 'champion', %s FROM precompute.models WHERE name = 'churn'",
            (v1,),
        )
        cur.execute(
            "UPDATE precompute.model_aliases SET version_id = %s WHERE alias = 'champion'", (v2,)
        )
        cur.execute("DELETE FROM precompute.model_aliases WHERE alias = 'champion'")
        cur.execute(
            "SELECT alias, from_version_id, to_version_id FROM precompute.model_alias_history"
            " ORDER BY event_id"
        )
        assert cur.fetchall() == [
            ("champion", None, v1),
            ("champion", v1, v2),
            ("champion", v2, None),
        ]


def test_an_alias_cannot_point_at_another_models_version(
    writer: psycopg2.extensions.connection,
) -> None:
    with writer.cursor() as cur:
        register(cur, "churn", 1)
        (other_version,) = register(cur, "fraud", 1)
        with pytest.raises(errors.ForeignKeyViolation):
            cur.execute(
                "INSERT INTO precompute.model_aliases (model_id, alias, version_id)"
                " SELECT model_id, 'champion', %s FROM precompute.models WHERE name = 'churn'",
                (other_version,),
            )


def test_run_counts_must_add_up(writer: psycopg2.extensions.connection) -> None:
    with writer.cursor() as cur:
        cur.execute(
            "INSERT INTO precompute.runs (run_id, mode, batch_id, rows_read, rows_accepted,"
            " rows_quarantined) VALUES ('ok', 'incremental', 'b1', 10, 9, 1)"
        )
        with pytest.raises(errors.CheckViolation):
            cur.execute(
                "INSERT INTO precompute.runs (run_id, mode, batch_id, rows_read, rows_accepted,"
                " rows_quarantined) VALUES ('lost', 'incremental', 'b2', 10, 8, 1)"
            )


def test_an_incremental_run_needs_a_batch(writer: psycopg2.extensions.connection) -> None:
    with writer.cursor() as cur, pytest.raises(errors.CheckViolation):
        cur.execute("INSERT INTO precompute.runs (run_id, mode) VALUES ('r', 'incremental')")


def test_champion_view_follows_the_alias_without_republishing(
    writer: psycopg2.extensions.connection,
) -> None:
    with writer.cursor() as cur:
        v1, v2 = register(cur, "churn", 2)
        cur.execute("INSERT INTO precompute.runs (run_id, mode) VALUES ('r', 'full')")
        for version_id, score in ((v1, 0.1), (v2, 0.2)):
            cur.execute(f"CREATE TABLE staging.p{version_id} (LIKE precompute.predictions)")
            cur.execute(
                f"ALTER TABLE precompute.predictions ATTACH PARTITION staging.p{version_id}"
                f" FOR VALUES IN ({version_id})"
            )
            cur.execute(
                "INSERT INTO precompute.predictions VALUES (%s, 'e1', %s, NULL, now(), 'r')",
                (version_id, score),
            )
        cur.execute(
            "INSERT INTO precompute.model_aliases (model_id, alias, version_id)"
            " SELECT model_id, 'champion', %s FROM precompute.models WHERE name = 'churn'",
            (v1,),
        )
        cur.execute("SELECT version, score FROM analytics.current_predictions")
        assert cur.fetchall() == [(1, 0.1)]
        cur.execute(
            "UPDATE precompute.model_aliases SET version_id = %s WHERE alias = 'champion'", (v2,)
        )
        cur.execute("SELECT version, score FROM analytics.current_predictions")
        assert cur.fetchall() == [(2, 0.2)]
