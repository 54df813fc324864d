"""Score requests: checked, queued exactly once, and shown only to the key that made them.

Queuing is idempotent in two ways. The API picks the request id itself and inserts with
ON CONFLICT DO NOTHING, so when the pool retries the insert after losing the reply (the row may
have been written), the retry finds the row instead of adding a second one. And a client may send
an Idempotency-Key: the same key with the same request returns the request made the first time.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from lookup_api.api.errors import ApiError, unknown_model
from lookup_api.api.schemas import ScoreRequestIn
from lookup_api.core.db import Database
from precompute import rules
from precompute.contracts import Contract, ContractError

INSERT = """
WITH inserted AS (
    INSERT INTO precompute.score_requests
        (request_id, model_id, entity_id, features, api_key_id, callback_url, idempotency_key,
         request_sha256)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT DO NOTHING
    RETURNING request_id, state, request_sha256
)
SELECT request_id, state, request_sha256 FROM inserted
UNION ALL
-- Nothing inserted: the row this id already wrote (a retried statement), or the request made
-- earlier with the same Idempotency-Key.
SELECT request_id, state, request_sha256 FROM precompute.score_requests
 WHERE request_id = $1 OR (api_key_id = $5 AND idempotency_key = $7)
"""


def request_hash(request: ScoreRequestIn) -> str:
    """Of what the request asks, not of its bytes: key order and spacing make no difference."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def submit(
    writer: Database,
    contracts: Callable[[str, int], Contract],
    key_id: int,
    max_pending: int,
    request: ScoreRequestIn,
    idempotency_key: str | None,
) -> tuple[str, str]:
    """Check the features against the champion's contract and queue the request: (id, state)."""
    digest = request_hash(request)
    rows = await writer.query(
        """
        SELECT m.model_id, v.input_schema,
               (SELECT count(*) FROM precompute.score_requests r
                 WHERE r.api_key_id = $1 AND r.state IN ('pending', 'scoring')),
               earlier.request_id, earlier.state, earlier.request_sha256
          FROM (SELECT) AS one
          LEFT JOIN precompute.models m ON m.name = $2
          LEFT JOIN precompute.model_aliases a
                 ON a.model_id = m.model_id AND a.alias = 'champion'
          LEFT JOIN precompute.model_versions v ON v.version_id = a.version_id
          LEFT JOIN precompute.score_requests earlier
                 ON earlier.api_key_id = $1 AND earlier.idempotency_key = $3
        """,
        key_id,
        request.model,
        idempotency_key,
    )
    model_id, schema, pending, *earlier = rows[0]
    if earlier[0] is not None:  # a replay: answered before anything else, as the first time
        return _same_request(earlier, digest, idempotency_key)
    if model_id is None:
        raise unknown_model(request.model)
    if schema is None:
        raise ApiError(
            409, "no_champion", f"model {request.model!r} has no champion version to score with"
        )
    if pending >= max_pending:
        raise ApiError(
            429,
            "too_many_pending",
            f"this key has {pending} score requests waiting (the limit is {max_pending}); "
            "submit more once they are scored",
        )
    # The same rules ingest applies to a row, so a request accepted here can be scored.
    contract = _contract(contracts, request.model, schema)
    record = {contract.entity_id.name: request.entity_id, **request.features}
    problems = rules.check_record(contract, record, rules.request_columns(contract))
    if problems:
        raise ApiError(400, "invalid_features", rules.explain(contract, problems))
    request_id = uuid.uuid4()
    args = (
        request_id,
        model_id,
        request.entity_id,
        request.features,
        key_id,
        str(request.callback_url) if request.callback_url else None,
        idempotency_key,
        digest,
    )
    found = await writer.query(INSERT, *args)
    if not found:
        # Another submission with the same Idempotency-Key committed while this one ran: its row
        # is visible to the next statement.
        found = await writer.query(INSERT, *args)
    return _same_request(list(found[0]), digest, idempotency_key)


def _contract(contracts: Callable[[str, int], Contract], model: str, schema: Any) -> Contract:
    try:
        return contracts(schema["dataset"], schema["version"])
    except ContractError as exc:
        raise ApiError(
            500,
            "contract_missing",
            f"the server cannot check features for model {model!r}: its input contract is "
            "missing; the server log has the details",
            detail=str(exc),
        ) from None


def _same_request(row: list[Any], digest: str, idempotency_key: str | None) -> tuple[str, str]:
    request_id, state, earlier_digest = row
    if earlier_digest != digest:
        raise ApiError(
            409,
            "idempotency_key_reused",
            f"the Idempotency-Key {idempotency_key!r} was used for a different request "
            f"({request_id}); send a new key with a new request",
        )
    return str(request_id), str(state)


async def score_request(db: Database, request_id: uuid.UUID, key_id: int) -> dict[str, Any]:
    """The request if this key made it; any other key gets the same 404 as for no request."""
    rows = await db.query(
        """
        SELECT r.request_id, m.name AS model, r.entity_id, r.state, v.version, r.score, r.label,
               r.error, r.run_id, r.created_at, r.updated_at
          FROM precompute.score_requests r
          JOIN precompute.models m USING (model_id)
          LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
         WHERE r.request_id = $1 AND r.api_key_id = $2
        """,
        request_id,
        key_id,
    )
    if not rows:
        raise ApiError(404, "unknown_request", f"this API key made no score request {request_id}")
    return dict(rows[0])
