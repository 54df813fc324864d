"""The API's connection pool: read-only role, statement timeout, recovery without a restart.

Connections are made on demand (an API started while the database is down comes up and reports
not ready), run in autocommit (a lookup is one statement: no BEGIN/COMMIT round trips), and a
connection that fails is thrown away, so once the database is back the next request gets a
fresh one. A request that finds a stale pooled connection (the server restarted under it) is
retried once on a new connection before the client is told.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import errors
from psycopg2.extensions import connection as Connection

RETRY_AFTER_SECONDS = 5


class DatabaseDown(Exception):
    """The database did not answer; the client should retry later."""


class QueryTimeout(Exception):
    """A query ran past the statement timeout."""


class Database:
    """At most `size` connections, made when first needed and kept while they work.

    (psycopg2's own pools close every connection returned beyond `minconn`, and open `minconn`
    at start, which fails while the database is down: neither fits.)
    """

    def __init__(self, url: str, size: int, statement_timeout_ms: int) -> None:
        self._url = url
        self._options = f"-c statement_timeout={statement_timeout_ms}"
        self._idle: list[Connection] = []
        self._statements: dict[str, str] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)  # callers wait for a free connection

    def prepare(self, name: str, types: str, statement: str) -> None:
        """Register a statement every connection prepares once (`$1`.. parameters); run it with
        `query(name, params, prepared=True)`. Lookups are planned once per connection, not per
        request: a quarter more lookups per second on one connection."""
        self._statements[name] = f"{name}({types}) AS {statement}"

    def query(
        self,
        statement: str,
        params: Sequence[Any] | dict[str, Any] = (),
        *,
        prepared: bool = False,
    ) -> list[Any]:
        """Run one statement (or a prepared one, by name) and return its rows."""
        if prepared:
            marks = ", ".join(["%s"] * len(params))
            statement = f"EXECUTE {statement}({marks})"
        for attempt in (1, 2):
            with self._slots:
                connection, fresh = self._connection()
                try:
                    with connection.cursor() as cursor:
                        cursor.execute(statement, params)
                        rows: list[Any] = cursor.fetchall()
                except errors.QueryCanceled as exc:
                    self._release(connection)
                    raise QueryTimeout(str(exc).strip()) from None
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    _close(connection)
                    if attempt == 1 and not fresh:
                        continue  # a connection from before a restart: try a new one
                    raise DatabaseDown(str(exc).strip()) from None
                except BaseException:
                    self._release(connection)
                    raise
                self._release(connection)
                return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
        try:
            connection = psycopg2.connect(
                self._url,
                connect_timeout=2,
                options=self._options,
                application_name="precompute-lookup-api",
            )
        except psycopg2.OperationalError as exc:
            raise DatabaseDown(str(exc).strip()) from None
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                for declaration in self._statements.values():
                    cursor.execute(f"PREPARE {declaration}")
        except psycopg2.Error as exc:
            _close(connection)
            raise DatabaseDown(str(exc).strip()) from None
        return connection, True

    def _release(self, connection: Connection) -> None:
        if connection.closed:
            return
        with self._lock:
            self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


def _close(connection: Connection) -> None:
    with contextlib.suppress(psycopg2.Error):  # already broken; nothing to give back
        connection.close()
