"""Injected dependencies: the database, and the API key a request must carry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from lookup_api.api.errors import ApiError
from lookup_api.core import keys
from lookup_api.core.db import Database


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    scopes: tuple[str, ...]


async def get_db(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


DbDep = Annotated[Database, Depends(get_db)]


async def _caller(request: Request, db: Database) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "send an API key as 'Authorization: Bearer <key>' (`precompute api-key create`)",
            {"WWW-Authenticate": "Bearer"},
        )
    digest = keys.key_hash(token.strip())
    cache: dict[str, tuple[float, Caller | None]] = request.app.state.key_cache
    ttl: float = request.app.state.key_cache_seconds
    now = time.monotonic()
    cached = cache.get(digest)
    if cached is not None and now - cached[0] < ttl:
        caller = cached[1]
    else:
        rows = await db.query("SELECT key_id, name, scopes FROM precompute.api_key_for($1)", digest)
        caller = Caller(rows[0][0], rows[0][1], tuple(rows[0][2])) if rows else None
        if len(cache) > 10_000:
            cache.clear()  # bounded: a flood of made-up keys must not grow it without end
        cache[digest] = (now, caller)
    if caller is None:
        raise ApiError(
            401, "invalid_key", "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"}
        )
    request.state.log["key"] = caller.name
    return caller


def require(*scopes: str) -> Callable[[Request, Database], Awaitable[Caller]]:
    """A dependency that admits callers whose key has one of `scopes`."""

    async def check(request: Request, db: DbDep) -> Caller:
        caller = await _caller(request, db)
        if not set(scopes) & set(caller.scopes):
            raise ApiError(
                403,
                "forbidden",
                f"this API key lacks the scope {' or '.join(repr(s) for s in scopes)} "
                f"(it has: {', '.join(caller.scopes)})",
            )
        return caller

    return check


Reader = Annotated[Caller, Depends(require(keys.READ))]
