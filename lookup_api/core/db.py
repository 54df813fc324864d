"""The API's connection pool: read-only role, statement timeout, recovery without a restart.

Connections are made on demand (an API started while the database is down comes up and reports
not ready), run in autocommit (a lookup is one statement: no BEGIN/COMMIT round trips), and a
connection that fails is thrown away, so once the database is back the next request gets a
fresh one. A request that finds a stale pooled connection (the server restarted under it) is
retried once on a new connection before the client is told.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import errors
from psycopg2.extensions import connection as Connection
from psycopg2.pool import PoolError, ThreadedConnectionPool

RETRY_AFTER_SECONDS = 5


class DatabaseDown(Exception):
    """The database did not answer; the client should retry later."""


class QueryTimeout(Exception):
    """A query ran past the statement timeout."""


class Database:
    def __init__(self, url: str, size: int, statement_timeout_ms: int) -> None:
        self._pool = ThreadedConnectionPool(
            0,
            size,
            dsn=url,
            connect_timeout=2,
            options=f"-c statement_timeout={statement_timeout_ms}",
            application_name="precompute-lookup-api",
        )
        # The pool refuses a request beyond its size; callers wait for a connection instead.
        self._slots = threading.BoundedSemaphore(size)

    def query(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Run one statement and return its rows."""
        for attempt in (1, 2):
            with self._slots:
                connection, fresh = self._connection()
                try:
                    with connection.cursor() as cursor:
                        cursor.execute(statement, params)
                        rows: list[Any] = cursor.fetchall()
                except errors.QueryCanceled as exc:
                    self._pool.putconn(connection)
                    raise QueryTimeout(str(exc).strip()) from None
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    self._pool.putconn(connection, close=True)
                    if attempt == 1 and not fresh:
                        continue  # a connection from before a restart: try a new one
                    raise DatabaseDown(str(exc).strip()) from None
                self._pool.putconn(connection)
                return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[Connection, bool]:
        try:
            connection = self._pool.getconn()
        except (psycopg2.OperationalError, PoolError) as exc:
            raise DatabaseDown(str(exc).strip()) from None
        fresh = not connection.autocommit
        if fresh:
            connection.autocommit = True
        return connection, fresh

    def close(self) -> None:
        self._pool.closeall()
