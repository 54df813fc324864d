"""The project's database and the roles it is reached as: admin (migrations), writer (jobs),
reader (analysts) and api (the lookup API).

An entry point resolves the settings once into a `Database` and passes it down: the URLs are
built (and the embedded server's password file read) once, not in every component that connects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from precompute.errors import PrecomputeError
from precompute.settings import Settings

Role = Literal["admin", "writer", "reader", "api"]
WRITER_ROLE = "precompute_writer"
READER_ROLE = "precompute_reader"
API_ROLE = "precompute_api"

# The embedded server's layout under `pg_dir`, which the local platform creates and the URL
# below reads: its superuser and the password generated when the server was initialised.
EMBEDDED_SUPERUSER = "postgres"
EMBEDDED_PASSWORD_FILE = "admin-password"


class DatabaseUnavailable(PrecomputeError):
    """The database cannot be reached."""


def admin_url(settings: Settings) -> str:
    """The URL migrations run with: DATABASE_URL, or the embedded server's superuser."""
    if settings.database_url is not None:
        return _libpq_url(settings.database_url.get_secret_value())
    return embedded_admin_url(settings.pg_dir, settings.pg_port, settings.pg_database)


def embedded_admin_url(pg_dir: Path, port: int, name: str) -> str:
    """The embedded server's superuser URL over loopback TCP."""
    password_file = pg_dir / EMBEDDED_PASSWORD_FILE
    if not password_file.is_file():
        raise DatabaseUnavailable(
            f"the embedded database in {pg_dir} is not initialised: run `precompute db start`"
        )
    password = password_file.read_text().strip()
    return f"postgresql://{EMBEDDED_SUPERUSER}:{password}@127.0.0.1:{port}/{name}"


def database_url(settings: Settings, role: Role = "admin") -> str:
    """The URL for a role on the project's database."""
    return Database.from_settings(settings).url(role)


def with_role(url: str, role: Role, settings: Settings) -> str:
    """The same server and database as the admin URL `url`, with the role's credentials."""
    return Database(url, unreachable_hint(settings), _credentials(settings)).url(role)


def _credentials(settings: Settings) -> dict[Role, tuple[str, str]]:
    return {
        "writer": (WRITER_ROLE, settings.writer_password.get_secret_value()),
        "reader": (READER_ROLE, settings.reader_password.get_secret_value()),
        "api": (API_ROLE, settings.api_password.get_secret_value()),
    }


@dataclass(frozen=True)
class Database:
    """The project's database, each role's URL resolved once from the settings."""

    admin_url: str = field(repr=False)  # holds the admin password
    hint: str
    # The other roles' (user, password): secrets, kept out of the repr.
    credentials: Mapping[Role, tuple[str, str]] = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            admin_url=admin_url(settings),
            hint=unreachable_hint(settings),
            credentials=_credentials(settings),
        )

    def url(self, role: Role = "writer") -> str:
        if role == "admin":
            return self.admin_url
        return _with_credentials(self.admin_url, *self.credentials[role])

    def connect(self, role: Role = "writer") -> Connection:
        return connect(self.url(role), hint=self.hint)

    @contextmanager
    def transaction(self, role: Role = "writer") -> Iterator[Cursor]:
        """A cursor in one transaction, as `transaction` below."""
        with transaction(self.url(role), hint=self.hint) as cursor:
            yield cursor

    def fetch(self, role: Role, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, run as `role` in its own short transaction."""
        with self.transaction(role) as cursor:
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows


def unreachable_hint(settings: Settings) -> str:
    """What to do when the configured server does not answer."""
    if settings.embedded_database:
        return "is the embedded server running? `precompute db start`"
    return "check DATABASE_URL and that the server is up"


def connect(
    url: str, *, hint: str = "check the URL and that the server is up", connect_timeout: int = 5
) -> Connection:
    """A psycopg2 connection, with an error that names the server when it cannot be reached."""
    try:
        return psycopg2.connect(url, connect_timeout=connect_timeout)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to {redacted(url)}: {str(exc).strip()} ({hint})"
        ) from None


@contextmanager
def transaction(url: str, *, hint: str) -> Iterator[Cursor]:
    """A cursor in one transaction on its own connection: committed on success, rolled back on
    an exception, and the connection closed either way."""
    connection = connect(url, hint=hint)
    try:
        with connection, connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def redacted(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


# URLs are handled with urllib rather than SQLAlchemy: importing SQLAlchemy costs half a
# second, which every `precompute` command would pay.
def _libpq_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg2://) as well as plain libpq ones."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise PrecomputeError(
            f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme or 'a bare string'}://"
        )
    return urlunsplit(parts._replace(scheme="postgresql"))


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
