"""Ordered SQL migrations from sql/, each applied in its own transaction and recorded by checksum.

A migration file is `NNNN_name.sql`. Once applied it is history: editing, renaming or deleting it
is refused with the file's name, because the database no longer matches what the files say.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from precompute.database import API_ROLE, READER_ROLE, WRITER_ROLE, connect, unreachable_hint
from precompute.errors import PrecomputeError
from precompute.settings import Settings, project_root

FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every migrator of this schema.
ADVISORY_LOCK_KEY = 7_270_316_801

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS precompute;
CREATE TABLE IF NOT EXISTS precompute.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
);
COMMENT ON TABLE precompute.schema_migrations IS
    'Schema migrations from sql/ applied to this database, with the SHA-256 of each file.';
"""


class MigrationError(PrecomputeError):
    """The migration files and the database disagree, or a migration failed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class MigrationReport:
    applied: list[Migration] = field(default_factory=list)
    already_applied: list[Migration] = field(default_factory=list)


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: str


def migrations_dir() -> Path:
    """sql/ in a source checkout; the copy packaged inside the wheel otherwise."""
    checkout = project_root() / "sql"
    return checkout if checkout.is_dir() else Path(__file__).parent / "sql"


def discover(directory: Path) -> list[Migration]:
    """The migration files in version order; a stray or duplicated name is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path} is not a migration name: expected NNNN_lowercase_name.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name} and {found[version].filename} share version {version:04d}"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


def migrate(url: str, settings: Settings, directory: Path | None = None) -> MigrationReport:
    """Apply every pending migration in order, then set the role passwords from the settings."""
    files = discover(directory or migrations_dir())
    conn = connect(url, hint=unreachable_hint(settings))
    conn.autocommit = True  # transactions are explicit below: one per migration
    report = MigrationReport()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            cur.execute(BOOTSTRAP)
            applied = {m.version: m for m in _applied(cur)}
            _check_history(files, applied)
            for migration in files:
                if migration.version in applied:
                    report.already_applied.append(migration)
                    continue
                _apply(cur, migration)
                report.applied.append(migration)
            _set_role_passwords(cur, settings)
    finally:
        conn.close()  # also releases the advisory lock
    return report


def applied_migrations(url: str) -> list[AppliedMigration]:
    """What the database says has been applied (empty before the first migrate)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('precompute.schema_migrations') IS NOT NULL")
            row = cur.fetchone()
            return _applied(cur) if row and row[0] else []
    finally:
        conn.close()


def _applied(cur: psycopg2.extensions.cursor) -> list[AppliedMigration]:
    cur.execute(
        "SELECT version, name, checksum, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ')"
        " FROM precompute.schema_migrations ORDER BY version"
    )
    return [AppliedMigration(*row) for row in cur.fetchall()]


def _check_history(files: list[Migration], applied: dict[int, AppliedMigration]) -> None:
    on_disk = {m.version: m for m in files}
    for version, done in applied.items():
        expected = f"{version:04d}_{done.name}.sql"
        current = on_disk.get(version)
        if current is None:
            raise MigrationError(
                f"migration {expected} was applied to this database but is missing from "
                "the migrations folder: restore it (applied migrations are history)"
            )
        if current.name != done.name:
            raise MigrationError(
                f"{current.filename} was applied as {expected}: renaming an applied "
                "migration is refused; restore its name"
            )
        if current.checksum != done.checksum:
            raise MigrationError(
                f"{current.filename} was changed after it was applied (checksum "
                f"{current.checksum[:12]}, applied {done.checksum[:12]}): restore the file "
                "and put the change in a new migration"
            )


def _apply(cur: psycopg2.extensions.cursor, migration: Migration) -> None:
    started = time.perf_counter()
    cur.execute("BEGIN")
    try:
        cur.execute(migration.path.read_text())
        cur.execute(
            "INSERT INTO precompute.schema_migrations (version, name, checksum, duration_ms)"
            " VALUES (%s, %s, %s, %s)",
            (
                migration.version,
                migration.name,
                migration.checksum,
                round((time.perf_counter() - started) * 1000),
            ),
        )
        cur.execute("COMMIT")
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK")
        detail = (exc.pgerror or str(exc)).strip()
        raise MigrationError(
            f"{migration.filename} failed and was rolled back; nothing of it was applied:\n{detail}"
        ) from None


def _set_role_passwords(cur: psycopg2.extensions.cursor, settings: Settings) -> None:
    """Passwords live in the settings, never in migration files.

    The server is sent each password's SCRAM-SHA-256 verifier, made here by libpq, never the
    password itself: a server that logs statements (log_statement, auto_explain, an error's
    STATEMENT line) then logs nothing a login could use.
    """
    for role, secret in (
        (WRITER_ROLE, settings.writer_password),
        (READER_ROLE, settings.reader_password),
        (API_ROLE, settings.api_password),
    ):
        verifier = psycopg2.extensions.encrypt_password(
            secret.get_secret_value(), role, cur, "scram-sha-256"
        )
        cur.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(role)),
            (verifier,),
        )
