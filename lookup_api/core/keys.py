"""API keys: made here, shown once, stored only as a SHA-256 hash.

A key is `pc_` followed by 32 random bytes in URL-safe base64; its first characters are kept as
a prefix so a listing can tell keys apart. Creating, listing and revoking keys uses the writer
role (the `precompute api-key` commands); the API checks a key through
`precompute.api_key_for`, which the read-only role may call without seeing the table.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
from dataclasses import dataclass

from psycopg2 import errors

from precompute import database
from precompute.errors import PrecomputeError
from precompute.names import READ_SCOPE, SUBMIT_SCOPE

READ = READ_SCOPE
SUBMIT = SUBMIT_SCOPE
SCOPES = (READ, SUBMIT)
PREFIX_LENGTH = 10
# What new_key() makes: 32 bytes are 43 characters of unpadded URL-safe base64. Anything else
# cannot be a key, so the API refuses it without asking the database.
KEY_FORMAT = re.compile(r"pc_[A-Za-z0-9_-]{43}")


class ApiKeyError(PrecomputeError):
    """A key cannot be created or revoked as asked."""


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None


def new_key() -> str:
    return "pc_" + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    return KEY_FORMAT.fullmatch(token) is not None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(url: str, hint: str, name: str, scopes: tuple[str, ...]) -> tuple[str, ApiKey]:
    """A new key and its record; the key itself is not stored anywhere."""
    if not scopes or set(scopes) - set(SCOPES):
        raise ApiKeyError(
            f"scopes must be among {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})"
        )
    key = new_key()
    try:
        with database.transaction(url, hint=hint) as cur:
            cur.execute(
                """
                INSERT INTO precompute.api_keys (name, key_prefix, key_sha256, scopes)
                VALUES (%s, %s, %s, %s)
                RETURNING key_id, name, key_prefix, scopes, created_at, revoked_at
                """,
                (name, key[:PREFIX_LENGTH], key_hash(key), list(scopes)),
            )
            row = cur.fetchone()
    except errors.UniqueViolation:
        raise ApiKeyError(f"a key named {name!r} exists: pick another name") from None
    except errors.CheckViolation:
        raise ApiKeyError("a key name must be 1 to 100 characters") from None
    return key, _key(row)


def listing(url: str, hint: str) -> list[ApiKey]:
    with database.transaction(url, hint=hint) as cur:
        cur.execute(
            "SELECT key_id, name, key_prefix, scopes, created_at, revoked_at "
            "FROM precompute.api_keys ORDER BY key_id"
        )
        return [_key(row) for row in cur.fetchall()]


def revoke(url: str, hint: str, name: str) -> ApiKey:
    with database.transaction(url, hint=hint) as cur:
        cur.execute(
            """
            UPDATE precompute.api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE name = %s
            RETURNING key_id, name, key_prefix, scopes, created_at, revoked_at
            """,
            (name,),
        )
        row = cur.fetchone()
    if row is None:
        raise ApiKeyError(f"no API key named {name!r} (`precompute api-key list` shows them)")
    return _key(row)


def _key(row: tuple[object, ...]) -> ApiKey:
    key_id, name, prefix, scopes, created, revoked = row
    return ApiKey(int(key_id), str(name), str(prefix), tuple(scopes), created, revoked)  # type: ignore[arg-type, call-overload]
