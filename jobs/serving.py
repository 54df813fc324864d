"""Publishing to the PostgreSQL serving tables: how a run's predictions become visible.

`precompute.predictions` is partitioned by model version, one partition per served version.
A run is published in three steps, and only the last one is visible to readers:

1. `prepare`: a staging table for the run in the `staging` schema, shaped like a partition,
   with the run's constant columns as defaults so the copy carries three columns only.
2. the copy (done by Spark executors in parallel, see `jobs.publish`), then `index` for a
   table that will become a partition: its primary key, built once after the rows are in.
3. `apply`, one transaction under a per-version lock:
   - swap (a full rescore, or a version with no partition yet): the staging table becomes the
     version's partition (detach and drop the old one, attach the new);
   - merge (an incremental batch at least MERGE_SHARE of the version's served rows): the
     served rows the batch does not replace are added to the staging table, which is indexed
     and swapped in;
   - upsert (a smaller incremental batch): insert-or-update from the staging table into the
     partition, in key order.
   Measured on 2 cores with a 1M-row partition and a 1M-row batch (half of it new keys):
   upsert 5.5 s (6.3 s unsorted); merge 2.8 s (batch 0.8 s, kept rows 1.3 s, key 0.75 s). Per
   row, upsert costs ~5.5 us of batch and merge ~1.9 us of batch plus kept rows, so merge wins
   from a batch of about half the partition; MERGE_SHARE is that break-even.
   It records the run in `published_runs` in the same transaction, so a published run is never
   published twice, and checks that as many rows were made visible as were scored.

A publish that dies before `apply` commits leaves the served data as it was, plus a staging
table that the retry drops and rebuilds. Which version a lookup reads is a row in
`model_aliases`; publishing never changes it. Old versions go by `jobs.serving_prune`. The
layout (table names, partition naming, columns) is `precompute.serving_store`'s, which the lookup
API reads by.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from jobs import score_requests
from jobs import serving_partitions as partitions
from jobs.run_records import CountMismatch
from precompute import database
from precompute import serving_store as store

Strategy = Literal["swap", "merge", "upsert"]
MERGE_SHARE = 0.5
# Index builds on millions of text keys sort in memory when allowed to.
INDEX_MEMORY = "512MB"


@dataclass(frozen=True)
class Publication:
    run_id: str
    mode: str
    model_version_id: int
    scored_at: datetime.datetime
    rows_scored: int
    rows_unpublished: int = 0  # scored rows left out (ids that cannot be served)

    @property
    def staging(self) -> sql.Identifier:
        return partitions.identifier(store.staging(self.run_id))

    @property
    def partition(self) -> sql.Identifier:
        return partitions.identifier(store.partition(self.model_version_id))


@dataclass(frozen=True)
class Applied:
    strategy: Strategy
    rows_published: int
    served_rows: int


def is_published(url: str, hint: str, run_id: str) -> int | None:
    """The row count of the run's publication, None when it was not published."""
    with database.transaction(url, hint=hint) as cur:
        cur.execute(f"SELECT row_count FROM {store.PUBLISHED_RUNS} WHERE run_id = %s", (run_id,))
        row = cur.fetchone()
        return None if row is None else int(row[0])


def prepare(url: str, hint: str, pub: Publication) -> Strategy:
    """Create the run's empty staging table (dropping a leftover); returns the planned strategy.

    A table that may become a partition is logged (it must survive a crash once served); one
    that only feeds an upsert is unlogged, which halves the cost of writing it.
    """
    with database.transaction(url, hint=hint) as cur:
        served = _served_rows(cur, pub) if pub.mode != "full" else None
        strategy: Strategy = (
            "swap"
            if served is None
            else "merge"
            if pub.rows_scored >= MERGE_SHARE * served
            else "upsert"
        )
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(pub.staging))
        _create_staging(cur, pub, unlogged=strategy == "upsert")
    return strategy


def _create_staging(cur: Cursor, pub: Publication, unlogged: bool) -> None:
    """A table shaped like a partition, the run's constants as defaults; its CHECK on the
    version implies the partition bound, so attaching it skips the scan."""
    constants = (pub.model_version_id, pub.scored_at, pub.run_id)
    defaults = dict(zip(store.RUN_COLUMNS, map(sql.Literal, constants), strict=True))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        + (sql.SQL(" DEFAULT {}").format(defaults[name]) if name in defaults else sql.SQL(""))
        for name, kind in store.COLUMNS
    )
    statement = "CREATE {persistence} TABLE {staging} ({columns}, CHECK ({key} = {version}))"
    cur.execute(
        sql.SQL(statement).format(
            persistence=sql.SQL("UNLOGGED" if unlogged else ""),
            staging=pub.staging,
            columns=columns,
            key=sql.Identifier(store.PARTITION_KEY),
            version=defaults[store.PARTITION_KEY],
        )
    )


def copy_statement(pub: Publication) -> str:
    """The COPY each executor runs; CSV because Arrow writes it fast and exactly.

    Plain text, since executors have no connection to render SQL objects with: the names
    are fixed or hexadecimal, so they need no quoting beyond what is written here.
    """
    table = store.staging(pub.run_id)
    columns = ", ".join(store.COPY_COLUMNS)
    return f'COPY "{table.schema}"."{table.name}" ({columns}) FROM STDIN WITH (FORMAT csv)'


def index(url: str, hint: str, pub: Publication) -> None:
    """Build the primary key a partition needs, outside the transaction readers wait on."""
    with database.transaction(url, hint=hint) as cur:
        _add_key(cur, pub)


def _add_key(cur: Cursor, pub: Publication) -> None:
    cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_MEMORY)))
    key = sql.SQL(", ").join(map(sql.Identifier, store.KEY))
    cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(pub.staging, key))


def apply(url: str, hint: str, pub: Publication, planned: Strategy) -> Applied:
    """Make the staged rows visible in one transaction; see the module docstring."""
    with database.transaction(url, hint=hint) as cur:
        # Publishes of one version take turns: each decides swap or upsert on what is served.
        partitions.lock_version(cur, pub.model_version_id)
        cur.execute(
            f"""
            INSERT INTO {store.PUBLISHED_RUNS} (run_id, model_version_id, mode, row_count)
            VALUES (%s, %s, %s, 0) ON CONFLICT (run_id) DO NOTHING
            """,
            (pub.run_id, pub.model_version_id, pub.mode),
        )
        if cur.rowcount == 0:
            raise AlreadyPublished(pub.run_id)
        # Decided again under the lock: another publish may have changed the partition.
        exists = partitions.exists(cur, pub.model_version_id)
        if pub.mode != "full" and exists and planned == "upsert":
            applied = _upsert(cur, pub)
        else:
            if planned == "upsert":  # the partition went away since prepare: make it one
                cur.execute(sql.SQL("ALTER TABLE {} SET LOGGED").format(pub.staging))
            kept = 0
            if pub.mode != "full" and exists:
                kept = _add_unreplaced_rows(cur, pub)
            if planned != "swap":  # swap's key was built by `index`, outside this transaction
                _add_key(cur, pub)
            applied = _swap(cur, pub, exists, kept)
        expected = pub.rows_scored - pub.rows_unpublished
        if applied.rows_published != expected:
            raise CountMismatch(
                f"run {pub.run_id}: {expected} rows were scored to publish but "
                f"{applied.rows_published} would have been published; the publish was "
                "rolled back and serving is unchanged"
            )
        # Requests the run answered are done once their predictions are served, not before.
        score_requests.mark_done(cur, pub.run_id, pub.model_version_id)
        cur.execute(
            f"UPDATE {store.PUBLISHED_RUNS} SET row_count = %s WHERE run_id = %s",
            (applied.rows_published, pub.run_id),
        )
        cur.execute(
            f"""
            INSERT INTO {store.SERVING_VERSIONS} (model_version_id, row_count, last_run_id)
            VALUES (%s, %s, %s)
            ON CONFLICT (model_version_id) DO UPDATE
               SET row_count = EXCLUDED.row_count, last_run_id = EXCLUDED.last_run_id,
                   published_at = now()
            """,
            (pub.model_version_id, applied.served_rows, pub.run_id),
        )
    return applied


class AlreadyPublished(Exception):
    """Another publish of the same run committed first."""


def _served_rows(cur: Cursor, pub: Publication) -> int | None:
    """Rows served for the version, None when it has no partition."""
    if not partitions.exists(cur, pub.model_version_id):
        return None
    return partitions.recorded_rows(cur, pub.model_version_id)


def _add_unreplaced_rows(cur: Cursor, pub: Publication) -> int:
    """Copy the served rows the batch does not replace into the staging table; how many."""
    cur.execute(
        sql.SQL(
            """
            INSERT INTO {staging}
            SELECT * FROM {partition} p
             WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.entity_id = p.entity_id)
            """
        ).format(staging=pub.staging, partition=pub.partition)
    )
    return int(cur.rowcount)


def _upsert(cur: Cursor, pub: Publication) -> Applied:
    cur.execute(
        sql.SQL(
            """
            WITH changed AS (
                INSERT INTO {partition} AS p
                SELECT * FROM {staging} ORDER BY entity_id
                ON CONFLICT ({key}) DO UPDATE SET {changes}
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*), count(*) FILTER (WHERE inserted) FROM changed
            """
        ).format(
            partition=pub.partition,
            staging=pub.staging,
            key=sql.SQL(", ").join(map(sql.Identifier, store.KEY)),
            changes=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
                for name, _ in store.COLUMNS
                if name not in store.KEY
            ),
        )
    )
    published, inserted = (int(v) for v in cur.fetchone())
    before = partitions.recorded_rows(cur, pub.model_version_id)
    cur.execute(sql.SQL("DROP TABLE {}").format(pub.staging))
    return Applied("upsert", published, before + inserted)


def _swap(cur: Cursor, pub: Publication, exists: bool, kept: int) -> Applied:
    """The staging table (the run's rows plus `kept` served ones) becomes the partition."""
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(pub.staging))
    rows = int(cur.fetchone()[0])
    if exists:
        partitions.drop(cur, pub.model_version_id)
    partitions.attach(cur, store.staging(pub.run_id), pub.model_version_id)
    strategy: Strategy = "merge" if exists and pub.mode != "full" else "swap"
    return Applied(strategy, rows - kept, rows)


def drop_staging(url: str, hint: str, pub: Publication) -> None:
    with database.transaction(url, hint=hint) as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(pub.staging))
