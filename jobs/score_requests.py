"""Asynchronous score requests: entities never scored, submitted through the lookup API.

A scoring run of a model's champion version claims the model's pending requests (and those a
failed run had claimed), scores them with its own rows, and its publish marks them done, in the
publishing transaction, with the prediction the lookup API now serves. A request whose features
no longer fit the champion's contract fails with the reason. When a batch row and a request name
the same entity, the batch row is scored and the request gets its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs import rules
from jobs.contracts import Contract
from precompute import database

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


@dataclass(frozen=True)
class Claimed:
    """Requests a run took on: their rows to score, and how many failed the contract."""

    rows: pa.Table | None
    failed: int

    @property
    def count(self) -> int:
        return 0 if self.rows is None else self.rows.num_rows


def claim(url: str, hint: str, model: str, run_id: str, contract: Contract) -> Claimed:
    """Take the model's pending requests for this run; refuse those the contract rejects."""
    with database.transaction(url, hint=hint) as cur:
        cur.execute(
            """
            UPDATE precompute.score_requests r
               SET state = 'scoring', run_id = %s, updated_at = now()
              FROM precompute.models m
             WHERE m.model_id = r.model_id AND m.name = %s
               AND (r.state = 'pending'
                    OR (r.state = 'scoring' AND (r.run_id = %s OR r.run_id IN (
                        SELECT run_id FROM precompute.runs WHERE state = 'failed'))))
            RETURNING r.request_id, r.entity_id, r.features
            """,
            (run_id, model, run_id),
        )
        claimed = cur.fetchall()
        good, bad = [], []
        for request_id, entity_id, features in claimed:
            record = {contract.entity_id.name: entity_id, **features}
            problems = rules.check_record(contract, record, rules.request_columns(contract))
            if problems:
                why = rules.explain(contract, problems)
                bad.append((f"features do not fit {contract.ref}: {why}", request_id))
            else:
                good.append((entity_id, features))
        if bad:
            cur.executemany(
                "UPDATE precompute.score_requests SET state = 'failed', error = %s, "
                "updated_at = now() WHERE request_id = %s",
                bad,
            )
    return Claimed(_table(contract, good) if good else None, len(bad))


def _table(contract: Contract, records: list[tuple[str, dict[str, Any]]]) -> pa.Table:
    """The requests as rows shaped like the incoming table's entity and feature columns."""
    import pyarrow as pa

    latest: dict[str, dict[str, Any]] = {}
    for entity_id, features in records:
        latest[entity_id] = features  # several requests for one entity: one row scores them all
    entity = contract.entity_id
    ids: list[Any] = list(latest)
    if entity.type == "long":
        ids = [int(i) for i in ids]
    columns = {entity.name: pa.array(ids, pa.int64() if entity.type == "long" else pa.string())}
    for column in contract.features:
        kind = ARROW_TYPES[column.type]
        arrow_type = pa.timestamp("us", tz="UTC") if kind == "timestamp" else getattr(pa, kind)()
        values = [features.get(column.name) for features in latest.values()]
        columns[column.name] = pa.array(values, arrow_type)
    return pa.table(columns)


def mark_done(cur: Cursor, run_id: str, model_version_id: int) -> int:
    """In the publishing transaction: the run's requests take their served predictions."""
    cur.execute(
        """
        UPDATE precompute.score_requests r
           SET state = 'done', score = p.score, label = p.label,
               model_version_id = p.model_version_id, error = NULL, updated_at = now(),
               callback_state = CASE WHEN r.callback_url IS NULL THEN 'none' ELSE 'pending' END,
               next_callback_at = CASE WHEN r.callback_url IS NULL THEN NULL ELSE now() END
          FROM precompute.predictions p
         WHERE r.run_id = %s AND r.state = 'scoring'
           AND p.model_version_id = %s AND p.entity_id = r.entity_id
        """,
        (run_id, model_version_id),
    )
    return int(cur.rowcount)
