"""Injected dependencies: the database, and the API key a request must carry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from lookup_api.api.errors import ApiError
from lookup_api.core import keys
from lookup_api.core.db import Database
from lookup_api.core.key_cache import KeyCache

# Declares the scheme in the OpenAPI document; the answers for a missing key are ours (below).
BEARER = HTTPBearer(auto_error=False, description="An API key: `precompute api-key create`.")
# A browser cannot put a Bearer header on a link: the routes for people (the run report) also
# take the key as HTTP Basic's password, with any user name, and challenge for it.
BASIC_CHALLENGE = 'Basic realm="precompute"'


class _Basic(HTTPBasic):
    """HTTP Basic whose unreadable header counts as no credentials (our 401, not FastAPI's)."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        try:
            return await super().__call__(request)
        except HTTPException:
            return None


BASIC = _Basic(
    scheme_name="HTTPBasic",
    auto_error=False,
    realm="precompute",
    description="For browsers: any user name, the API key as the password.",
)


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    scopes: tuple[str, ...]


async def get_db(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


async def get_writer(request: Request) -> Database:
    database: Database = request.app.state.writer
    return database


DbDep = Annotated[Database, Depends(get_db)]
WriterDep = Annotated[Database, Depends(get_writer)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
BasicCredentials = Annotated[HTTPBasicCredentials | None, Security(BASIC)]


async def _caller(
    request: Request, db: Database, token: str | None, challenge: str = "Bearer"
) -> Caller:
    def refused(code: str, message: str) -> ApiError:
        return ApiError(401, code, message, {"WWW-Authenticate": challenge})

    token = (token or "").strip()
    if not token:
        raise refused(
            "unauthenticated",
            "send an API key as 'Authorization: Bearer <key>' (`precompute api-key create`)",
        )
    if not keys.well_formed(token):
        # Nothing else can be a key: no database work, and nothing cached for it.
        raise refused("invalid_key", "the API key is unknown or revoked")
    digest = keys.key_hash(token)
    cache: KeyCache[Caller] = request.app.state.key_cache
    now = time.monotonic()
    fresh, caller = cache.get(digest, now)
    if not fresh:
        rows = await db.query("SELECT key_id, name, scopes FROM precompute.api_key_for($1)", digest)
        caller = Caller(rows[0][0], rows[0][1], tuple(rows[0][2])) if rows else None
        request.app.state.metrics.key_checks.labels("known" if caller else "unknown").inc()
        cache.put(digest, caller, now)
    if caller is None:
        raise refused("invalid_key", "the API key is unknown or revoked")
    request.state.log["key"] = caller.name
    return caller


def _in_scope(caller: Caller, scopes: tuple[str, ...]) -> Caller:
    if not set(scopes) & set(caller.scopes):
        raise ApiError(
            403,
            "forbidden",
            f"this API key lacks the scope {' or '.join(repr(s) for s in scopes)} "
            f"(it has: {', '.join(caller.scopes)})",
        )
    return caller


def require(*scopes: str) -> Callable[[Request, Database, Credentials], Awaitable[Caller]]:
    """A dependency that admits callers whose key has one of `scopes`."""

    async def check(request: Request, db: DbDep, credentials: Credentials) -> Caller:
        token = credentials.credentials if credentials else None
        return _in_scope(await _caller(request, db, token), scopes)

    return check


async def browser_reader(
    request: Request, db: DbDep, bearer: Credentials, basic: BasicCredentials
) -> Caller:
    """A read key as a Bearer token or as HTTP Basic's password; without one, the challenge
    makes a browser ask for it."""
    token = bearer.credentials if bearer else basic.password if basic else None
    return _in_scope(await _caller(request, db, token, BASIC_CHALLENGE), (keys.READ,))


Reader = Annotated[Caller, Depends(require(keys.READ))]
BrowserReader = Annotated[Caller, Depends(browser_reader)]
Submitter = Annotated[Caller, Depends(require(keys.SUBMIT))]
Anyone = Annotated[Caller, Depends(require(keys.READ, keys.SUBMIT))]
