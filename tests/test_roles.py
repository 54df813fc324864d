"""The two roles: the writer for jobs, the read-only reader for the API and analysts."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from conftest import fetch_all
from psycopg2 import errors, sql

from precompute import database, migrations
from precompute.settings import Settings

PROJECT_SCHEMAS = ("precompute", "analytics", "staging", "serving")


@pytest.fixture
def migrated(fresh_database: str, settings: Settings) -> str:
    migrations.migrate(fresh_database, settings)
    return fresh_database


@pytest.fixture
def reader(migrated: str, settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    conn = database.connect(database.with_role(migrated, "reader", settings))
    conn.autocommit = True
    yield conn
    conn.close()


def relations(url: str, kinds: tuple[str, ...]) -> list[str]:
    rows = fetch_all(
        url,
        """
        SELECT format('%%I.%%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind = ANY(%s)
        ORDER BY 1
        """,
        (list(PROJECT_SCHEMAS), list(kinds)),
    )
    return [row[0] for row in rows]


def test_reader_can_select_from_every_analyst_view(
    migrated: str, reader: psycopg2.extensions.connection
) -> None:
    views = [v for v in relations(migrated, ("v",)) if v.startswith("analytics.")]
    assert len(views) >= 4
    with reader.cursor() as cur:
        for view in views:
            cur.execute(f"SELECT * FROM {view} LIMIT 1")
            assert cur.description is not None, view


def test_reader_holds_no_write_privilege_on_any_relation(migrated: str) -> None:
    conn = database.connect(migrated)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT format('%%I.%%I', n.nspname, c.relname), p.privilege
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege)
                WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND has_table_privilege('precompute_reader', c.oid, p.privilege)
                """,
                (list(PROJECT_SCHEMAS),),
            )
            assert cur.fetchall() == []
            cur.execute(
                "SELECT nspname FROM pg_namespace"
                " WHERE has_schema_privilege('precompute_reader', oid, 'CREATE')"
            )
            assert cur.fetchall() == []
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO precompute.models (name, task) VALUES ('m', 'regression')",
        "UPDATE precompute.runs SET state = 'failed'",
        "DELETE FROM precompute.model_aliases",
        "INSERT INTO precompute.predictions VALUES (1, 'e', 0.5, NULL, now(), 'r')",
        # A simple view is auto-updatable: only the missing grant stops these two.
        "UPDATE analytics.run_metrics SET value = 0",
        "DELETE FROM analytics.run_metrics",
        "TRUNCATE precompute.run_metrics",
        "CREATE TABLE staging.mine (x int)",
        "CREATE TABLE public.mine (x int)",
    ],
)
def test_reader_cannot_change_anything_even_in_a_read_write_transaction(
    reader: psycopg2.extensions.connection, statement: str
) -> None:
    # Sessions start read-only for the reader; switch that off to prove the grants hold alone.
    with reader.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        with pytest.raises(errors.InsufficientPrivilege):
            cur.execute(statement)


def test_reader_sessions_start_read_only(reader: psycopg2.extensions.connection) -> None:
    with reader.cursor() as cur, pytest.raises(errors.ReadOnlySqlTransaction):
        cur.execute("CREATE TEMP TABLE scratch (x int)")


def test_reader_cannot_see_api_key_hashes(reader: psycopg2.extensions.connection) -> None:
    with reader.cursor() as cur, pytest.raises(errors.InsufficientPrivilege):
        cur.execute("SELECT key_sha256 FROM precompute.api_keys")


def test_writer_can_register_and_create_a_serving_partition(
    migrated: str, settings: Settings
) -> None:
    conn = database.connect(database.with_role(migrated, "writer", settings))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO precompute.models (name, task) VALUES ('churn', 'classification')"
            )
            # The publish job builds partitions itself: the writer owns the partitioned table.
            cur.execute(
                "CREATE TABLE staging.predictions_v1"
                " (LIKE precompute.predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            cur.execute(
                "ALTER TABLE precompute.predictions ATTACH PARTITION staging.predictions_v1"
                " FOR VALUES IN (1)"
            )
            cur.execute("INSERT INTO precompute.predictions VALUES (1, 'e1', 0.9, '1', now(), 'r')")
            cur.execute("SELECT count(*) FROM precompute.predictions WHERE model_version_id = 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_every_relation_and_column_the_reader_sees_is_documented(migrated: str) -> None:
    conn = database.connect(migrated)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT format('%%I.%%I', n.nspname, c.relname)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND has_table_privilege('precompute_reader', c.oid, 'SELECT')
                  AND obj_description(c.oid, 'pg_class') IS NULL
                """,
                (list(PROJECT_SCHEMAS),),
            )
            assert cur.fetchall() == [], "relations without COMMENT ON"
            cur.execute(
                """
                SELECT format('%%I.%%I.%%I', n.nspname, c.relname, a.attname)
                FROM pg_attribute a
                JOIN pg_class c ON c.oid = a.attrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND a.attnum > 0 AND NOT a.attisdropped
                  AND has_column_privilege('precompute_reader', c.oid, a.attnum, 'SELECT')
                  AND col_description(c.oid, a.attnum) IS NULL
                """,
                (list(PROJECT_SCHEMAS),),
            )
            assert cur.fetchall() == [], "columns without COMMENT ON"
            cur.execute(
                sql.SQL(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'analytics' AND c.relkind = 'v'"
                )
            )
            row = cur.fetchone()
            assert row is not None and row[0] >= 4  # the check above looked at real views
    finally:
        conn.close()
