"""The serving store's partitions, one per served model version: the statements publishing
(`jobs.serving`) and pruning (`jobs.serving_prune`) both run on them, in the caller's
transaction. Names come from `precompute.serving_store`."""

from __future__ import annotations

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from precompute import serving_store as store

LOCK_TIMEOUT = "30s"  # how long a change waits for readers' locks before giving up


def identifier(table: store.Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def lock_version(cur: Cursor, model_version_id: int) -> None:
    """Take the version's turn to change its partition (publish or prune), waiting at most
    LOCK_TIMEOUT for any lock after it in this transaction."""
    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtext('precompute.publish'), %s)", (model_version_id,)
    )


def exists(cur: Cursor, model_version_id: int) -> bool:
    """Whether the version has a partition attached to the predictions."""
    partition = store.partition(model_version_id)
    cur.execute(
        """
        SELECT 1 FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = %s::regclass AND n.nspname = %s AND c.relname = %s
        """,
        (str(store.PREDICTIONS), partition.schema, partition.name),
    )
    return cur.fetchone() is not None


def recorded_rows(cur: Cursor, model_version_id: int) -> int:
    """The rows serving_versions records for the version (0 when it records none)."""
    cur.execute(
        f"SELECT row_count FROM {store.SERVING_VERSIONS} WHERE model_version_id = %s",
        (model_version_id,),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def attach(cur: Cursor, staging: store.Table, model_version_id: int) -> None:
    """Make a staging table the version's partition (it has none attached now)."""
    partition = store.partition(model_version_id)
    name = sql.Identifier(partition.name)
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(identifier(staging), name))
    renamed = sql.Identifier(staging.schema, partition.name)
    cur.execute(
        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(renamed, sql.Identifier(partition.schema))
    )
    # The staging table's CHECK on the version implies the bound, so attaching skips the scan.
    cur.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            identifier(store.PREDICTIONS), identifier(partition), sql.Literal(model_version_id)
        )
    )


def drop(cur: Cursor, model_version_id: int) -> None:
    """Detach the version's partition from the predictions and drop it."""
    partition = identifier(store.partition(model_version_id))
    parent = identifier(store.PREDICTIONS)
    cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition))
    cur.execute(sql.SQL("DROP TABLE {}").format(partition))
