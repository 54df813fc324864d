"""The API's reads: each answers one request in one statement and returns data, or None when
there is nothing (the routes decide what that means to the client). The serving store's
statements are those of `precompute.serving_store`, where its layout is written once; a run's
record is read here from the analytics views, its report as stored. Score requests:
submissions.py."""

from __future__ import annotations

from typing import Any

from lookup_api.core.db import Database
from precompute import serving_store as store


async def lookup(
    db: Database, model: str, alias: str, version: int | None, ids: list[str]
) -> tuple[int, list[dict[str, Any]]] | None:
    """The chosen version's number and the predictions found among `ids`; None when the model
    has no such alias or version."""
    rows = await db.query(store.LOOKUP, model, alias, version, ids)
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
            "probabilities": probabilities,
        }
        for number, entity, score, label, scored_at, run_id, probabilities in rows  # SERVED_COLUMNS
        if entity is not None
    ]
    return int(rows[0][0]), found


async def versions_and_aliases(db: Database, model: str) -> tuple[str | None, str | None] | None:
    """A model's versions ('v1, v2') and aliases ('champion, ...'), None if there is no model."""
    rows = await db.query(store.VERSIONS_AND_ALIASES, model)
    return (rows[0][0], rows[0][1]) if rows else None


async def models(db: Database) -> list[dict[str, Any]]:
    rows = await db.query(store.MODELS_LIST)
    return [
        {"name": n, "task": t, "description": d, "aliases": a, "versions": int(c)}
        for n, t, d, a, c in rows
    ]


async def model(db: Database, name: str) -> dict[str, Any] | None:
    rows = await db.query(store.MODEL_DETAIL, name)
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


async def run_report(db: Database, run_id: str) -> str | None:
    """The HTML report the run's check stored (the jobs render it), None when there is none."""
    rows = await db.query("SELECT html FROM precompute.run_reports WHERE run_id = $1", run_id)
    return str(rows[0][0]) if rows else None
