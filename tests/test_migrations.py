"""Migrations: ordered, recorded with checksums, each in its own transaction."""

from __future__ import annotations

import shutil
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from conftest import fetch_all
from psycopg2 import sql
from sqlalchemy import make_url

from local.embedded_pg import embedded_server
from precompute import database, migrations
from precompute.migrations import MigrationError
from precompute.settings import Settings

EXPECTED_RELATIONS = [
    "precompute.schema_migrations",
    "precompute.models",
    "precompute.model_versions",
    "precompute.model_aliases",
    "precompute.model_alias_history",
    "precompute.runs",
    "precompute.run_stages",
    "precompute.run_metrics",
    "precompute.run_reports",
    "precompute.predictions",
    "precompute.serving_versions",
    "precompute.published_runs",
    "precompute.api_keys",
    "precompute.score_requests",
    "analytics.model_versions",
    "analytics.current_predictions",
    "analytics.runs",
    "analytics.run_metrics",
]


def schema_fingerprint(url: str) -> list[tuple[str, ...]]:
    """Every relation and column of the project's schemas, and the migration records."""
    columns = fetch_all(
        url,
        """
        SELECT table_schema, table_name, column_name, data_type
        FROM information_schema.columns
        WHERE table_schema IN ('precompute', 'analytics', 'staging')
        ORDER BY 1, 2, 3
        """,
    )
    records = fetch_all(
        url,
        "SELECT version::text, checksum, applied_at::text"
        " FROM precompute.schema_migrations ORDER BY version",
    )
    return [tuple(map(str, row)) for row in columns] + [tuple(row) for row in records]


def relation_exists(url: str, name: str) -> bool:
    return bool(fetch_all(url, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0])


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ that a test may edit."""
    target = tmp_path / "sql"
    shutil.copytree(migrations.migrations_dir(), target)
    return target


def test_migrations_apply_on_an_empty_database(fresh_database: str, settings: Settings) -> None:
    report = migrations.migrate(fresh_database, settings)

    on_disk = migrations.discover(migrations.migrations_dir())
    assert [m.filename for m in report.applied] == [m.filename for m in on_disk]
    assert report.already_applied == []
    for name in EXPECTED_RELATIONS:
        assert relation_exists(fresh_database, name), name
    recorded = migrations.applied_migrations(fresh_database)
    assert [(a.version, a.checksum) for a in recorded] == [(m.version, m.checksum) for m in on_disk]


def test_second_migrate_is_a_no_op(fresh_database: str, settings: Settings) -> None:
    migrations.migrate(fresh_database, settings)
    before = schema_fingerprint(fresh_database)

    report = migrations.migrate(fresh_database, settings)

    assert report.applied == []
    assert len(report.already_applied) == len(migrations.discover(migrations.migrations_dir()))
    assert schema_fingerprint(fresh_database) == before


def test_an_edited_applied_migration_is_refused_by_name(
    fresh_database: str, settings: Settings, sql_copy: Path
) -> None:
    migrations.migrate(fresh_database, settings, sql_copy)
    edited = sql_copy / "0003_runs.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    (sql_copy / "9999_later.sql").write_text("CREATE TABLE precompute.later (x int);")
    before = schema_fingerprint(fresh_database)

    with pytest.raises(MigrationError, match=r"0003_runs\.sql was changed after it was applied"):
        migrations.migrate(fresh_database, settings, sql_copy)

    # Refused before anything ran: the pending migration after it was not applied either.
    assert schema_fingerprint(fresh_database) == before
    assert not relation_exists(fresh_database, "precompute.later")


def test_a_deleted_applied_migration_is_refused_by_name(
    fresh_database: str, settings: Settings, sql_copy: Path
) -> None:
    migrations.migrate(fresh_database, settings, sql_copy)
    (sql_copy / "0004_serving.sql").unlink()

    with pytest.raises(MigrationError, match=r"0004_serving\.sql was applied .* is missing"):
        migrations.migrate(fresh_database, settings, sql_copy)


def test_a_renamed_applied_migration_is_refused(
    fresh_database: str, settings: Settings, sql_copy: Path
) -> None:
    migrations.migrate(fresh_database, settings, sql_copy)
    (sql_copy / "0004_serving.sql").rename(sql_copy / "0004_serving_tables.sql")

    with pytest.raises(MigrationError, match=r"0004_serving_tables\.sql was applied as 0004_ser"):
        migrations.migrate(fresh_database, settings, sql_copy)


def test_a_failing_migration_is_rolled_back_whole_and_named(
    fresh_database: str, settings: Settings, sql_copy: Path
) -> None:
    broken = sql_copy / "0100_broken.sql"
    broken.write_text(
        "CREATE TABLE precompute.half_done (x int);\nCREATE TABLE precompute.oops (x nosuchtype);"
    )

    with pytest.raises(
        MigrationError, match=r"(?s)0100_broken\.sql failed and was rolled back.*nosuchtype.*LINE 2"
    ):
        migrations.migrate(fresh_database, settings, sql_copy)

    # The earlier migrations committed one by one; the broken one left nothing behind.
    assert relation_exists(fresh_database, "precompute.runs")
    assert not relation_exists(fresh_database, "precompute.half_done")
    assert 100 not in {a.version for a in migrations.applied_migrations(fresh_database)}

    broken.write_text("CREATE TABLE precompute.half_done (x int);")
    report = migrations.migrate(fresh_database, settings, sql_copy)
    assert [m.filename for m in report.applied] == ["0100_broken.sql"]


def test_a_file_not_named_like_a_migration_is_refused(
    fresh_database: str, settings: Settings, sql_copy: Path
) -> None:
    (sql_copy / "7_Fix.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"7_Fix\.sql is not a migration name"):
        migrations.migrate(fresh_database, settings, sql_copy)
    assert migrations.applied_migrations(fresh_database) == []


def test_two_files_with_one_version_are_refused(sql_copy: Path) -> None:
    (sql_copy / "0002_duplicate.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match="share version 0002"):
        migrations.discover(sql_copy)


def test_role_passwords_reach_the_server_only_as_scram_verifiers(
    fresh_database: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not settings.embedded_database:
        pytest.skip("reads the embedded server's log; an external server's log is not ours")
    log = embedded_server(settings).log_file
    # The server logs every statement on this database, as a server set up for auditing would.
    name = make_url(fresh_database).database
    with closing(database.connect(fresh_database)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(name))
        )
    secrets = {
        "PRECOMPUTE_WRITER_PASSWORD": f"writer-{uuid.uuid4().hex}",
        "PRECOMPUTE_READER_PASSWORD": f"reader-{uuid.uuid4().hex}",
        "PRECOMPUTE_API_PASSWORD": f"api-{uuid.uuid4().hex}",
    }
    for variable, value in secrets.items():
        monkeypatch.setenv(variable, value)
    chosen = Settings()
    logged_before = log.stat().st_size
    try:
        migrations.migrate(fresh_database, chosen)
        with log.open(errors="replace") as file:
            file.seek(logged_before)
            logged = file.read()
        # Roles are cluster-wide: each new password works, and none was ever sent.
        writer = database.connect(database.with_role(fresh_database, "writer", chosen))
        writer.close()
    finally:
        with closing(database.connect(fresh_database)) as conn, conn, conn.cursor() as cur:
            migrations._set_role_passwords(cur, settings)  # the other tests' passwords back

    assert "ALTER ROLE" in logged and "SCRAM-SHA-256$4096:" in logged
    for value in secrets.values():
        assert value not in logged
