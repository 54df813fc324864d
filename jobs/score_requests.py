"""Asynchronous score requests: entities never scored, submitted through the lookup API.

A scoring run of a model's champion version claims the model's pending requests, scores them
with its own rows, and its publish marks them done, in the publishing transaction, with the
prediction the lookup API now serves. When a batch row and a request name the same entity, the
batch row is scored and the request gets its prediction.

A claim is a lease (`PRECOMPUTE_SCORE_REQUEST_LEASE_SECONDS`): a run that fails gives its
requests back at once, one that dies silently leaves them to whichever run comes after the lease
ends, and a request claimed `PRECOMPUTE_SCORE_REQUEST_MAX_ATTEMPTS` times without being published
fails with the reason. Each request is checked against the champion's contract and converted to
the row Spark scores on its own: one that does not fit (a number beyond a long, a date that is
not one) fails with the reason, and the others are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from precompute import rules, serving_store
from precompute.contracts import Column, Contract
from precompute.database import Database

if TYPE_CHECKING:
    import pyarrow as pa
    from psycopg2.extensions import cursor as Cursor

ARROW_TYPES = {
    "long": "int64",
    "double": "float64",
    "boolean": "bool_",
    "string": "string",
    "date": "date32",
    "timestamp": "timestamp",
}
# A request a run may take: waiting, or claimed by a run whose lease has ended.
CLAIMABLE = "(r.state = 'pending' OR (r.state = 'scoring' AND r.claimed_until <= now()))"


@dataclass(frozen=True)
class Claimed:
    """Requests a run took on: their rows to score, and how many failed instead."""

    rows: pa.Table | None
    failed: int

    @property
    def count(self) -> int:
        return 0 if self.rows is None else self.rows.num_rows


def claim(
    db: Database,
    model: str,
    run_id: str,
    contract: Contract,
    *,
    lease_seconds: float,
    max_attempts: int,
) -> Claimed:
    """Take the model's claimable requests for this run; fail those that cannot be scored."""
    with db.transaction("writer") as cur:
        params = {"model": model, "run": run_id, "lease": lease_seconds, "max": max_attempts}
        # Claimed often enough already: whatever made each run fail, it is not tried again.
        cur.execute(
            """
            UPDATE precompute.score_requests r
               SET state = 'failed', claimed_until = NULL, updated_at = now(),
                   error = format('scoring was tried %%s times and no run published it (the '
                                  'last was %%s); it is not tried again', r.attempts, r.run_id)
              FROM precompute.models m
             WHERE m.model_id = r.model_id AND m.name = %(model)s AND r.attempts >= %(max)s
               AND r.state = 'scoring' AND (r.claimed_until <= now() OR r.run_id = %(run)s)
            """,
            params,
        )
        given_up = cur.rowcount
        # A rerun of a run takes back its own requests, lease or not.
        cur.execute(
            f"""
            UPDATE precompute.score_requests r
               SET state = 'scoring', run_id = %(run)s, attempts = r.attempts + 1,
                   claimed_until = now() + make_interval(secs => %(lease)s), updated_at = now()
              FROM precompute.models m
             WHERE m.model_id = r.model_id AND m.name = %(model)s
               AND ({CLAIMABLE} OR (r.state = 'scoring' AND r.run_id = %(run)s))
            RETURNING r.request_id, r.entity_id, r.features, r.created_at
            """,
            params,
        )
        claimed = sorted(cur.fetchall(), key=lambda r: r[3])
        table, bad = rows(contract, [r[:3] for r in claimed])
        if bad:
            cur.executemany(
                "UPDATE precompute.score_requests SET state = 'failed', error = %s, "
                "claimed_until = NULL, updated_at = now() WHERE request_id = %s",
                bad,
            )
    return Claimed(table, given_up + len(bad))


def release(db: Database, run_id: str) -> None:
    """End a failed run's lease on the requests it claimed, so the next run takes them."""
    with db.transaction("writer") as cur:
        cur.execute(
            "UPDATE precompute.score_requests SET claimed_until = now(), updated_at = now() "
            "WHERE run_id = %s AND state = 'scoring'",
            (run_id,),
        )


def rows(
    contract: Contract, requests: list[tuple[Any, str, Any]]
) -> tuple[pa.Table | None, list[tuple[str, Any]]]:
    """The requests (id, entity id, features) as rows shaped like the incoming table's entity
    and feature columns, each converted and checked on its own; and (reason, request id) for
    each one that cannot be scored."""
    # pyarrow is heavy, and the DAG planner imports this module for CLAIMABLE alone.
    import pyarrow as pa

    schema = pa.schema([(c.name, _arrow_type(c)) for c in (contract.entity_id, *contract.features)])
    latest: dict[Any, pa.RecordBatch] = {}
    failed: list[tuple[str, Any]] = []
    for request_id, entity_id, features in requests:
        try:
            batch = _row(contract, schema, entity_id, features)
        except Unscorable as exc:
            failed.append((str(exc), request_id))
            continue
        key = batch.column(0)[0].as_py()
        latest.pop(key, None)  # several requests for one entity: the newest row scores them all
        latest[key] = batch
    if not latest:
        return None, failed
    return pa.Table.from_batches(list(latest.values()), schema=schema), failed


class Unscorable(Exception):
    """Why one request cannot be scored, as the request's error says it."""


def _row(contract: Contract, schema: pa.Schema, entity_id: str, features: Any) -> pa.RecordBatch:
    """One request's row, or Unscorable saying what is wrong with it: the contract's rules
    (the same ones the API applied at submission and ingest applies to rows; the contract may
    have changed since), then Arrow, which has the last word on the values."""
    import pyarrow as pa  # heavy: see rows()

    if not isinstance(features, dict):
        raise Unscorable(f"features must be a JSON object, not {type(features).__name__}")
    record = {contract.entity_id.name: entity_id, **features}
    typed, problems = rules.typed_record(contract, record, rules.request_columns(contract))
    if problems:
        raise Unscorable(f"features do not fit {contract.ref}: {rules.explain(contract, problems)}")
    row = {c.name: typed.get(c.name) for c in rules.request_columns(contract)}
    try:
        return pa.RecordBatch.from_pylist([row], schema=schema)
    except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
        raise Unscorable(f"cannot be scored with {contract.ref}: {exc}") from None


def _arrow_type(column: Column) -> pa.DataType:
    import pyarrow as pa  # heavy: see rows()

    kind = ARROW_TYPES[column.type]
    return pa.timestamp("us", tz="UTC") if kind == "timestamp" else getattr(pa, kind)()


def mark_done(cur: Cursor, run_id: str, model_version_id: int) -> int:
    """In the publishing transaction: the run's requests take their served predictions."""
    cur.execute(
        f"""
        UPDATE precompute.score_requests r
           SET state = 'done', score = p.score, label = p.label,
               model_version_id = p.model_version_id, error = NULL, updated_at = now(),
               claimed_until = NULL,
               callback_state = CASE WHEN r.callback_url IS NULL THEN 'none' ELSE 'pending' END,
               next_callback_at = CASE WHEN r.callback_url IS NULL THEN NULL ELSE now() END
          FROM {serving_store.PREDICTIONS} p
         WHERE r.run_id = %s AND r.state = 'scoring'
           AND p.model_version_id = %s AND p.entity_id = r.entity_id
        """,
        (run_id, model_version_id),
    )
    return int(cur.rowcount)
