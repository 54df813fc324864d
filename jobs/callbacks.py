"""Callbacks of done score requests: the result POSTed as signed JSON to the URL the caller gave.

Delivery happens outside any database transaction, because a receiver is not trusted to answer
quickly or at all: a short transaction claims the due callbacks with a lease (two deliverers
never post the same one; one that dies leaves them to the next when the lease ends), up to
`PRECOMPUTE_CALLBACK_CONCURRENCY` are posted at once without a lock held, each within a total
deadline (`PRECOMPUTE_CALLBACK_TIMEOUT_SECONDS`), and each outcome is recorded in a short
transaction of its own. Whatever one receiver does fails only its own delivery.

A failed delivery (an address that is not public, no answer in time, a reply that is not HTTP, a
redirect, any status but 2xx) is tried again after a delay that doubles each time,
`PRECOMPUTE_CALLBACK_BACKOFF_SECONDS` at first, so a failing receiver moves behind the others;
after `PRECOMPUTE_CALLBACK_MAX_ATTEMPTS` attempts the callback is marked failed, with the reason
(the request itself stays done and can be read). Publish delivers what is due when it has
committed; `precompute score-requests deliver` does it at any time.

Each body is signed: `X-Precompute-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with PRECOMPUTE_CALLBACK_SECRET>` (README: how a receiver checks it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs import callback_client
from precompute import callback_targets
from precompute.database import Database
from precompute.settings import Settings

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

SIGNATURE_HEADER = "X-Precompute-Signature"
# A claim outlives the delivery's deadline (which bounds it) and the recording of its outcome.
LEASE_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class CallbackPolicy:
    """How callbacks are delivered, read once from the PRECOMPUTE_CALLBACK_* settings."""

    allowed: callback_targets.Allowed
    concurrency: int
    timeout_seconds: float
    max_attempts: int
    backoff_seconds: float
    secret: bytes = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackPolicy:
        return cls(
            allowed=callback_targets.Allowed.parse(settings.callback_allowed_hosts),
            concurrency=settings.callback_concurrency,
            timeout_seconds=settings.callback_timeout_seconds,
            max_attempts=settings.callback_max_attempts,
            backoff_seconds=settings.callback_backoff_seconds,
            secret=settings.callback_secret.get_secret_value().encode(),
        )


@dataclass(frozen=True)
class Delivery:
    delivered: int
    retrying: int
    failed: int


@dataclass(frozen=True)
class Callback:
    """A claimed callback: where it goes, which attempt this is, and what it says."""

    request_id: Any
    url: str
    attempt: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    detail: str  # why it failed; empty when delivered


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for a body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def deliver_due(
    db: Database, policy: CallbackPolicy, limit: int = 1000, seconds: float | None = None
) -> Delivery:
    """Try the callbacks that are due, at most `limit`, claiming new ones for at most `seconds`
    (those under way then still finish within their deadline); returns what happened."""
    stop_claiming = None if seconds is None else time.monotonic() + seconds
    counts = {"delivered": 0, "pending": 0, "failed": 0}
    taken, exhausted = 0, False
    slots = policy.concurrency
    # One connection for the claims and the records, each its own short transaction; it sits
    # idle, outside any transaction, while the receivers take their time.
    connection = db.connect("writer")
    try:
        with ThreadPoolExecutor(slots, thread_name_prefix="callback") as pool:
            running: dict[Future[Outcome], Callback] = {}
            while True:
                room = min(slots - len(running), limit - taken)
                in_time = stop_claiming is None or time.monotonic() < stop_claiming
                if room > 0 and in_time and not exhausted:
                    claimed = claim(connection, policy, room)
                    exhausted, taken = len(claimed) < room, taken + len(claimed)
                    for callback in claimed:
                        running[pool.submit(_attempt, callback, policy)] = callback
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    callback = running.pop(future)
                    counts[_record(connection, policy, callback, future.result())] += 1
    finally:
        connection.close()
    return Delivery(counts["delivered"], counts["pending"], counts["failed"])


def claim(connection: Connection, policy: CallbackPolicy, n: int) -> list[Callback]:
    """Claim up to n due callbacks, oldest due first; each claim counts as an attempt."""
    lease = 2 * policy.timeout_seconds + LEASE_MARGIN_SECONDS
    with connection, connection.cursor() as cur:
        # A deliverer that died with the last attempt claimed leaves nothing to retry.
        cur.execute(
            """
            UPDATE precompute.score_requests
               SET callback_state = 'failed', callback_claimed_until = NULL, updated_at = now(),
                   callback_error = 'the last delivery attempt never reported back'
             WHERE callback_state = 'pending' AND callback_attempts >= %s
               AND callback_claimed_until <= now()
            """,
            (policy.max_attempts,),
        )
        cur.execute(
            """
            WITH due AS (
                SELECT request_id FROM precompute.score_requests
                 WHERE callback_state = 'pending' AND next_callback_at <= now()
                   AND (callback_claimed_until IS NULL OR callback_claimed_until <= now())
                   AND callback_attempts < %s
                 ORDER BY next_callback_at LIMIT %s FOR UPDATE SKIP LOCKED
            )
            UPDATE precompute.score_requests r
               SET callback_attempts = r.callback_attempts + 1,
                   callback_claimed_until = now() + make_interval(secs => %s)
              FROM due
             WHERE r.request_id = due.request_id
            RETURNING r.request_id, r.callback_url, r.callback_attempts, r.entity_id,
                      (SELECT name FROM precompute.models m WHERE m.model_id = r.model_id),
                      (SELECT version FROM precompute.model_versions v
                        WHERE v.version_id = r.model_version_id),
                      r.score, r.label, r.run_id
            """,
            (policy.max_attempts, n, lease),
        )
        claimed = cur.fetchall()
    return [
        Callback(
            request_id,
            target,
            attempt,
            {
                "request_id": str(request_id),
                "state": "done",
                "entity_id": entity_id,
                "model": model,
                "version": version,
                "score": score,
                "label": label,
                "run_id": run_id,
            },
        )
        for request_id, target, attempt, entity_id, model, version, score, label, run_id in claimed
    ]


def _attempt(callback: Callback, policy: CallbackPolicy) -> Outcome:
    """Post one callback; never raises: whatever the receiver does is its delivery's outcome."""
    timeout = policy.timeout_seconds
    deadline = time.monotonic() + timeout
    try:
        # Checked again here: the name may resolve elsewhere than when it was submitted.
        target = callback_targets.resolve(callback.url, policy.allowed, timeout)
        body = json.dumps(callback.body, separators=(",", ":")).encode()
        headers = {SIGNATURE_HEADER: sign(policy.secret, body, int(time.time()))}
        reply = callback_client.post(target, body, headers, deadline)
    except Exception as exc:  # a hostile receiver can make the client raise anything
        return Outcome(False, _why(exc, timeout))
    return Outcome(True, "") if reply.delivered else Outcome(False, reply.describe())


def _why(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no complete reply within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the receiver's TLS certificate was refused: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "the receiver refused the connection"
    if isinstance(exc, ConnectionResetError):
        return "the receiver reset the connection"
    if isinstance(exc, callback_targets.RefusedTarget | callback_client.BadReply):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def _record(
    connection: Connection, policy: CallbackPolicy, callback: Callback, outcome: Outcome
) -> str:
    """Record one attempt's outcome in its own transaction; the callback's new state."""
    if outcome.delivered:
        state = "delivered"
    elif callback.attempt >= policy.max_attempts:
        state = "failed"
    else:
        state = "pending"
    delay = policy.backoff_seconds * 2 ** (callback.attempt - 1)
    with connection, connection.cursor() as cur:
        # Only while the claim is still this attempt's: past its lease another may have it.
        cur.execute(
            """
            UPDATE precompute.score_requests
               SET callback_state = %s, callback_claimed_until = NULL, updated_at = now(),
                   callback_error = %s,
                   next_callback_at = CASE WHEN %s = 'pending'
                                           THEN now() + make_interval(secs => %s) END
             WHERE request_id = %s AND callback_attempts = %s
            """,
            (
                state,
                outcome.detail or None,
                state,
                delay,
                callback.request_id,
                callback.attempt,
            ),
        )
    return state
