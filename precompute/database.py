"""Database URLs for the ways the project connects: admin (migrations), writer (jobs), reader
(analysts) and api (the lookup API)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from precompute.embedded_pg import EmbeddedPostgres
from precompute.errors import PrecomputeError
from precompute.settings import Settings

Role = Literal["admin", "writer", "reader", "api"]
WRITER_ROLE = "precompute_writer"
READER_ROLE = "precompute_reader"
API_ROLE = "precompute_api"


class DatabaseUnavailable(PrecomputeError):
    """The database cannot be reached."""


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    """The embedded server described by the settings (whether or not it is running)."""
    return EmbeddedPostgres(settings.pg_dir, settings.pg_port, settings.pg_database)


def admin_url(settings: Settings) -> str:
    """The URL migrations run with: DATABASE_URL, or the embedded server's superuser."""
    if settings.database_url is not None:
        return _libpq_url(settings.database_url.get_secret_value())
    return embedded_server(settings).admin_url()


def database_url(settings: Settings, role: Role = "admin") -> str:
    """The URL for a role on the project's database."""
    return with_role(admin_url(settings), role, settings)


def with_role(url: str, role: Role, settings: Settings) -> str:
    """The same server and database as `url`, with the role's credentials."""
    if role == "admin":
        return url
    user, secret = {
        "writer": (WRITER_ROLE, settings.writer_password),
        "reader": (READER_ROLE, settings.reader_password),
        "api": (API_ROLE, settings.api_password),
    }[role]
    return _with_credentials(url, user, secret.get_secret_value())


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


def fetch(
    settings: Settings, role: Role, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[Any, ...]]:
    """The rows of one statement, run as `role` in its own short transaction."""
    url = database_url(settings, role)
    with transaction(url, hint=unreachable_hint(settings)) as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


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
