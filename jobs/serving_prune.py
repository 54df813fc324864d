"""Pruning the PostgreSQL serving tables: old versions' partitions go, aliased ones stay.

Run by `precompute serving prune` and the maintenance DAG. The layout is
`precompute.serving_store`'s; the lock on a version is the one publishing takes
(`jobs.serving_partitions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs import serving_partitions as partitions
from jobs.registry import lock_model_of_version
from precompute import database
from precompute import serving_store as store


@dataclass(frozen=True)
class Removed:
    model: str
    version: int
    model_version_id: int
    rows: int


def prune(url: str, hint: str, keep: int) -> list[Removed]:
    """Drop the serving partitions of each model beyond its `keep` newest served versions.

    A version an alias points at is never dropped, whatever its age: a lookup may read it.
    Each drop is its own short transaction, so readers wait on at most one.
    """
    with database.transaction(url, hint=hint) as cur:
        cur.execute(
            f"""
            SELECT m.name, v.version, s.model_version_id, s.row_count
              FROM (SELECT s.*, row_number() OVER (PARTITION BY v.model_id
                                                   ORDER BY v.version DESC) AS newness
                      FROM {store.SERVING_VERSIONS} s
                      JOIN {store.MODEL_VERSIONS} v ON v.version_id = s.model_version_id) s
              JOIN {store.MODEL_VERSIONS} v ON v.version_id = s.model_version_id
              JOIN {store.MODELS} m USING (model_id)
             WHERE s.newness > %s AND NOT {store.aliased("s.model_version_id")}
             ORDER BY m.name, v.version
            """,
            (keep,),
        )
        candidates = [Removed(*row) for row in cur.fetchall()]
    removed = []
    for old in candidates:
        with database.transaction(url, hint=hint) as cur:
            partitions.lock_version(cur, old.model_version_id)
            # Alias moves take the model's row lock: holding it, no promotion can land between
            # this check and the drop (it waits, and then points at a version serving nothing).
            lock_model_of_version(cur, old.model_version_id)
            # Checked again under the lock: an alias may have moved onto it meanwhile.
            cur.execute(f"SELECT {store.aliased('%s')}", (old.model_version_id,))
            if cur.fetchone()[0]:
                continue
            partitions.drop(cur, old.model_version_id)
            cur.execute(
                f"DELETE FROM {store.SERVING_VERSIONS} WHERE model_version_id = %s",
                (old.model_version_id,),
            )
        removed.append(old)
    return removed
