"""The API's connection pools (asyncpg): one per role, a statement timeout, recovery by itself.

Connections are made on demand (an API started while the database is down comes up and reports
not ready); a connection that fails is thrown away, so once the database is back the next request
gets a fresh one. A request that fails on a connection from before a server restart is retried
once on a new connection before the client is told.

asyncpg rather than psycopg2 here: the routes await the database on the event loop instead of
hopping to a thread per request, and asyncpg prepares each statement once per connection and
decodes rows from the binary protocol. Together with generic plans (below) that took single
lookups from about 2,300 to over 3,000 per second on the 2-core benchmark machine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

RETRY_AFTER_SECONDS = 5
CONNECT_TIMEOUT_SECONDS = 2

# What a lost or refused connection looks like from asyncpg: the server is down, starting,
# shutting down or restarted under a pooled connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
)


class DatabaseDown(Exception):
    """The database did not answer; the client should retry later."""


class QueryTimeout(Exception):
    """A query ran past the statement timeout."""


class InvalidValue(Exception):
    """The database refused a value from the request (a NUL character, a number out of range)."""


class Database:
    """A pool of at most `size` connections for one role, made when first needed.

    Every statement is prepared once per connection (asyncpg's statement cache) and, with
    `generic_plans`, planned once too: PostgreSQL otherwise re-plans the lookup on every call,
    because its custom plan looks cheaper than the generic one, and planning costs more than
    running it (measured: 3,100 against 6,600 lookups per second on one connection).
    """

    def __init__(
        self,
        url: str,
        size: int,
        statement_timeout_ms: int,
        *,
        generic_plans: bool = False,
        read_only: bool = False,
    ) -> None:
        self._url = url
        self._size = size
        self._settings = {
            "statement_timeout": str(statement_timeout_ms),
            "application_name": "precompute-lookup-api",
        }
        if generic_plans:
            self._settings["plan_cache_mode"] = "force_generic_plan"
        if read_only:
            self._settings["default_transaction_read_only"] = "on"
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Make the (empty) pool; connects nothing, so it works while the database is down."""
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=0,
            max_size=self._size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings=self._settings,
            init=_codecs,
            # Statements here change no session state, so the default reset (four statements
            # on every release) is a round trip for nothing.
            reset=_nothing,
        )

    async def query(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement (`$1`.. parameters) and return its rows."""
        if self._pool is None:
            raise RuntimeError("Database.open() was not awaited")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as connection:
                    rows: list[asyncpg.Record] = await connection.fetch(statement, *args)
                    return rows
            except asyncpg.QueryCanceledError as exc:
                raise QueryTimeout(str(exc).strip()) from None
            except asyncpg.DataError as exc:  # asyncpg's own argument checks, and SQLSTATE 22
                raise InvalidValue(str(exc).strip()) from None
            except CONNECTION_ERRORS as exc:
                if attempt == 1:
                    continue  # maybe a connection from before a restart: try a new one
                raise DatabaseDown(str(exc).strip() or type(exc).__name__) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def _codecs(connection: asyncpg.Connection) -> None:
    """jsonb as Python values, as psycopg2 gives them (asyncpg's default is text)."""
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def _nothing(connection: asyncpg.Connection) -> None:
    return None
