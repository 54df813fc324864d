"""Callbacks of done score requests: the result POSTed as JSON to the URL the caller gave.

A delivery that fails (no answer, or not a 2xx) is tried again after a delay that doubles each
time, `PRECOMPUTE_CALLBACK_BACKOFF_SECONDS` at first, up to `PRECOMPUTE_CALLBACK_MAX_ATTEMPTS`
attempts; then the callback is marked failed (the request itself stays done and can be read).
Publish delivers what is due when it finishes; `precompute score-requests deliver` does it on a
schedule.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from precompute import database
from precompute.settings import Settings

TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Delivery:
    delivered: int
    retrying: int
    failed: int


def deliver_due(settings: Settings, limit: int = 1000) -> Delivery:
    """Try every callback that is due once; returns what happened."""
    url = database.database_url(settings, "writer")
    hint = database.unreachable_hint(settings)
    delivered = retrying = failed = 0
    for _ in range(limit):
        # One request per transaction, locked so two deliverers never post the same callback.
        with database.transaction(url, hint=hint) as cur:
            cur.execute(
                """
                SELECT r.request_id, r.callback_url, r.callback_attempts, r.entity_id, m.name,
                       v.version, r.score, r.label, r.run_id
                  FROM precompute.score_requests r
                  JOIN precompute.models m USING (model_id)
                  LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
                 WHERE r.callback_state = 'pending' AND r.next_callback_at <= now()
                 ORDER BY r.next_callback_at LIMIT 1 FOR UPDATE OF r SKIP LOCKED
                """
            )
            row = cur.fetchone()
            if row is None:
                break
            request_id, target, attempts, entity_id, model, version, score, label, run_id = row
            body = {
                "request_id": str(request_id),
                "state": "done",
                "entity_id": entity_id,
                "model": model,
                "version": version,
                "score": score,
                "label": label,
                "run_id": run_id,
            }
            attempts += 1
            if _post(target, body):
                state, delivered = "delivered", delivered + 1
            elif attempts >= settings.callback_max_attempts:
                state, failed = "failed", failed + 1
            else:
                state, retrying = "pending", retrying + 1
            delay = settings.callback_backoff_seconds * 2 ** (attempts - 1)
            cur.execute(
                """
                UPDATE precompute.score_requests
                   SET callback_state = %s, callback_attempts = %s, updated_at = now(),
                       next_callback_at = CASE WHEN %s = 'pending'
                                               THEN now() + make_interval(secs => %s) END
                 WHERE request_id = %s
                """,
                (state, attempts, state, delay, request_id),
            )
    return Delivery(delivered, retrying, failed)


def _post(target: str, body: dict[str, object]) -> bool:
    request = urllib.request.Request(
        target,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "precompute-callbacks"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False
