"""The API's reads: each answers one request in one statement and returns data, or None when
there is nothing (the routes decide what that means to the client). Score requests:
submissions.py."""

from __future__ import annotations

from typing import Any

from lookup_api.core.db import Database

# One statement resolves the version and reads its predictions, so both come from one snapshot.
# Written for a generic plan (the pool plans it once per connection): each branch of `chosen` is
# an index lookup whichever of alias or version is given, and the predictions' partition is
# pruned at run time from the chosen version.
LOOKUP = """
WITH model AS (
    SELECT model_id FROM precompute.models WHERE name = $1
), chosen AS (
    SELECT v.version_id, v.version
      FROM model JOIN precompute.model_versions v
        ON v.model_id = model.model_id AND v.version = $3::integer
     WHERE $3::integer IS NOT NULL
    UNION ALL
    SELECT v.version_id, v.version
      FROM model
      JOIN precompute.model_aliases a ON a.model_id = model.model_id AND a.alias = $2
      JOIN precompute.model_versions v ON v.version_id = a.version_id
     WHERE $3::integer IS NULL
)
SELECT c.version, p.entity_id, p.score, p.label, p.scored_at, p.run_id
  FROM chosen c
  LEFT JOIN precompute.predictions p
         ON p.model_version_id = c.version_id AND p.entity_id = ANY($4::text[])
"""


async def lookup(
    db: Database, model: str, alias: str, version: int | None, ids: list[str]
) -> tuple[int, list[dict[str, Any]]] | None:
    """The chosen version's number and the predictions found among `ids`; None when the model
    has no such alias or version."""
    rows = await db.query(LOOKUP, model, alias, version, ids)
    if not rows:
        return None
    # A run's rows share one scored_at: format each distinct time once (isoformat, as FastAPI
    # writes times elsewhere), a millisecond saved per 1,000 predictions.
    stamps: dict[Any, str] = {}
    found = [
        {
            "entity_id": entity,
            "model": model,
            "version": number,
            "score": score,
            "label": label,
            "scored_at": stamps.get(scored_at)
            or stamps.setdefault(scored_at, scored_at.isoformat()),
            "run_id": run_id,
        }
        for number, entity, score, label, scored_at, run_id in rows
        if entity is not None
    ]
    return int(rows[0][0]), found


async def versions_and_aliases(db: Database, model: str) -> tuple[str | None, str | None] | None:
    """A model's versions ('v1, v2') and aliases ('champion, ...'), None if there is no model."""
    rows = await db.query(
        """
        SELECT (SELECT string_agg('v' || v.version, ', ' ORDER BY v.version)
                  FROM precompute.model_versions v WHERE v.model_id = m.model_id),
               (SELECT string_agg(a.alias, ', ' ORDER BY a.alias)
                  FROM precompute.model_aliases a WHERE a.model_id = m.model_id)
          FROM precompute.models m WHERE m.name = $1
        """,
        model,
    )
    return (rows[0][0], rows[0][1]) if rows else None


async def models(db: Database) -> list[dict[str, Any]]:
    rows = await db.query(
        """
        SELECT m.name, m.task, m.description,
               coalesce((SELECT jsonb_object_agg(a.alias, v.version)
                           FROM precompute.model_aliases a
                           JOIN precompute.model_versions v USING (version_id)
                          WHERE a.model_id = m.model_id), '{}'),
               (SELECT count(*) FROM precompute.model_versions v WHERE v.model_id = m.model_id)
          FROM precompute.models m ORDER BY m.name
        """
    )
    return [
        {"name": n, "task": t, "description": d, "aliases": a, "versions": int(c)}
        for n, t, d, a, c in rows
    ]


async def model(db: Database, name: str) -> dict[str, Any] | None:
    rows = await db.query(
        """
        SELECT m.name, m.task, m.description, v.version, v.model_kind, v.metrics, v.created_at,
               coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM precompute.model_aliases a
                          WHERE a.version_id = v.version_id), '{}'),
               s.row_count, s.published_at
          FROM precompute.models m
          LEFT JOIN precompute.model_versions v ON v.model_id = m.model_id
          LEFT JOIN precompute.serving_versions s ON s.model_version_id = v.version_id
         WHERE m.name = $1 ORDER BY v.version
        """,
        name,
    )
    if not rows:
        return None
    versions = [
        {
            "version": r[3],
            "kind": r[4],
            "metrics": r[5],
            "registered_at": r[6],
            "aliases": list(r[7]),
            "served_predictions": r[8],
            "published_at": r[9],
        }
        for r in rows
        if r[3] is not None
    ]
    return {"name": rows[0][0], "task": rows[0][1], "description": rows[0][2], "versions": versions}


async def run(db: Database, run_id: str) -> dict[str, Any] | None:
    rows = await db.query(
        """
        SELECT r.run_id, r.mode, r.batch_id, r.model, r.version, r.state, r.rows_read,
               r.rows_accepted, r.rows_quarantined, r.rows_scored, r.rows_published,
               r.rejected_share, r.psi, r.error, r.started_at, r.finished_at,
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'stage', s.stage, 'state', s.state, 'attempt', s.attempt,
                            'attempts', s.attempts, 'rows_in', s.rows_in,
                            'rows_out', s.rows_out, 'rows_rejected', s.rows_rejected,
                            'started_at', s.started_at, 'finished_at', s.finished_at,
                            'error', s.error) ORDER BY s.started_at)
                           FROM analytics.run_stages s WHERE s.run_id = r.run_id), '[]')
               AS stages
          FROM analytics.runs r WHERE r.run_id = $1
        """,
        run_id,
    )
    return dict(rows[0]) if rows else None
