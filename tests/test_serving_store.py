"""The serving store's writer and reader agree through its one layout (`precompute.serving_store`):
rows published by the jobs' side (`jobs.serving`, psycopg2, without Spark: the COPY the executors
run is made here) and pruned (`jobs.serving_prune`) are read back by the lookup API's reads
(`lookup_api.crud`, asyncpg, as the API's pool runs them), on a freshly migrated database."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
from typing import Any

import pytest
from api_support import models_seed
from conftest import fetch_all
from pydantic import SecretStr

from jobs import serving, serving_prune
from jobs.registry import Registry
from lookup_api import crud
from lookup_api.core.db import Database
from precompute import database, migrations
from precompute import serving_store as store
from precompute.settings import Settings

SEED = models_seed(3)
SCORED_AT = datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.UTC)
Row = tuple[str, float, str | None]  # entity_id, score, label: store.COPY_COLUMNS


@pytest.fixture
def migrated(fresh_database: str, settings: Settings) -> str:
    migrations.migrate(fresh_database, settings)
    fetch_all(database.with_role(fresh_database, "writer", settings), SEED)
    return fresh_database


def version_ids(url: str) -> dict[int, int]:
    """Version number -> version id (the partition key)."""
    return dict(fetch_all(url, f"SELECT version, version_id FROM {store.MODEL_VERSIONS}"))


def publish(url: str, settings: Settings, run_id: str, version_id: int, rows: list[Row]) -> str:
    """Publish `rows` as run `run_id` (full when it starts with 'full', else incremental) the
    way `jobs.publish` does, the COPY included; the strategy apply took."""
    mode = "full" if run_id.startswith("full") else "incremental"
    fetch_all(
        url,
        "INSERT INTO precompute.runs (run_id, mode, batch_id, model_version_id, state) "
        "VALUES (%s, %s, %s, %s, 'running')",
        (run_id, mode, None if mode == "full" else run_id, version_id),
    )
    writer = database.with_role(url, "writer", settings)
    pub = serving.Publication(run_id, mode, version_id, SCORED_AT, len(rows))
    planned = serving.prepare(writer, "", pub)
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    text.seek(0)
    connection = database.connect(writer)
    try:
        with connection, connection.cursor() as cur:
            cur.copy_expert(serving.copy_statement(pub), text)
    finally:
        connection.close()
    if planned == "swap":
        serving.index(writer, "", pub)
    return serving.apply(writer, "", pub, planned).strategy


def registry(url: str, settings: Settings) -> Registry:
    """The jobs' registry on the database: it moves the aliases lookups resolve."""
    on_url = settings.model_copy(update={"database_url": SecretStr(url)})
    return Registry(database.Database.from_settings(on_url))


def read(url: str, settings: Settings, calls: dict[str, Any]) -> dict[str, Any]:
    """Await each crud call on the API's kind of pool (api role, generic plans, read only)."""

    async def run() -> dict[str, Any]:
        db = Database(
            database.with_role(url, "api", settings), 2, 5000, generic_plans=True, read_only=True
        )
        await db.open()
        try:
            return {name: await call(db) for name, call in calls.items()}
        finally:
            await db.close()

    return asyncio.run(run())


def lookup(*args: Any) -> Any:
    return lambda db: crud.lookup(db, *args)


def found(chosen: tuple[int, list[dict[str, Any]]] | None) -> tuple[int, dict[str, Any]] | None:
    """A lookup's version and {entity: (score, label, run)}."""
    if chosen is None:
        return None
    number, predictions = chosen
    for p in predictions:
        assert p["scored_at"] == SCORED_AT.isoformat()
    return number, {p["entity_id"]: (p["score"], p["label"], p["run_id"]) for p in predictions}


def test_the_layout_is_the_one_the_migrations_made(migrated: str) -> None:
    tables = (
        store.PREDICTIONS,
        store.SERVING_VERSIONS,
        store.PUBLISHED_RUNS,
        store.MODELS,
        store.MODEL_VERSIONS,
        store.MODEL_ALIASES,
    )
    missing = [
        t for t in tables if fetch_all(migrated, "SELECT to_regclass(%s)", (str(t),)) == [(None,)]
    ]
    assert not missing
    schemas = fetch_all(
        migrated,
        "SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)",
        (store.PARTITION_SCHEMA, store.STAGING_SCHEMA),
    )
    assert sorted(schemas) == sorted([(store.PARTITION_SCHEMA,), (store.STAGING_SCHEMA,)])
    columns = fetch_all(
        migrated,
        "SELECT attname, format_type(atttypid, atttypmod) || CASE WHEN attnotnull "
        "       THEN ' NOT NULL' ELSE '' END "
        "  FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        " ORDER BY attnum",
        (str(store.PREDICTIONS),),
    )
    assert tuple(columns) == store.COLUMNS
    (key,) = fetch_all(
        migrated,
        "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
        "  CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        " WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (str(store.PREDICTIONS),),
    )
    assert tuple(key[0]) == store.KEY


def test_what_the_jobs_publish_and_prune_the_api_reads_through_aliases_and_versions(
    migrated: str, settings: Settings
) -> None:
    ids = version_ids(migrated)
    v1: list[Row] = [
        ("c0", 0.9, "true"),
        ("c1", 0.2, "false"),
        ("c2", 0.6, "true"),
        ("c3", 0.1, "false"),
    ]
    v2: list[Row] = [("c0", 0.1, "false"), ("c1", 0.8, "true")]
    assert publish(migrated, settings, "full-v1", ids[1], v1) == "swap"
    assert publish(migrated, settings, "full-v2", ids[2], v2) == "swap"
    assert publish(migrated, settings, "full-v3", ids[3], [("c0", 0.5, None)]) == "swap"
    # An incremental batch much smaller than what v1 serves: an upsert into its partition.
    assert publish(migrated, settings, "inc-v1", ids[1], [("c1", 0.7, "true")]) == "upsert"
    # One about as big as what is served: merged with the served rows and swapped in.
    batch: list[Row] = [(f"x{i}", 0.3, "false") for i in range(3)]
    assert publish(migrated, settings, "inc-v1-merge", ids[1], batch) == "merge"
    registry(migrated, settings).move_aliases("churn", {"champion": 1, "challenger": 3})
    partitions = fetch_all(
        migrated,
        "SELECT c.relnamespace::regnamespace::text || '.' || c.relname FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (str(store.PREDICTIONS),),
    )
    assert sorted(p for (p,) in partitions) == sorted(
        str(store.partition(ids[v])) for v in (1, 2, 3)
    )

    # v3 is the newest served and challenger, v1 is champion: keeping one, v2 goes.
    writer = database.with_role(migrated, "writer", settings)
    removed = serving_prune.prune(writer, "", keep=1)
    assert [(r.model, r.version, r.model_version_id, r.rows) for r in removed] == [
        ("churn", 2, ids[2], 2)
    ]
    assert serving_prune.prune(writer, "", keep=1) == []

    wanted = ["c0", "c1", "x0", "nobody"]
    got = read(
        migrated,
        settings,
        {
            "champion": lookup("churn", "champion", None, wanted),
            "challenger": lookup("churn", "challenger", None, wanted),
            "v1": lookup("churn", "champion", 1, wanted),
            "pruned": lookup("churn", "champion", 2, wanted),
            "no alias": lookup("churn", "gold", None, wanted),
            "no version": lookup("churn", "champion", 9, wanted),
            "no model": lookup("nope", "champion", None, wanted),
            "known": lambda db: crud.versions_and_aliases(db, "churn"),
            "models": crud.models,
            "model": lambda db: crud.model(db, "churn"),
        },
    )
    champion = (
        1,
        {
            "c0": (0.9, "true", "full-v1"),
            "c1": (0.7, "true", "inc-v1"),
            "x0": (0.3, "false", "inc-v1-merge"),
        },
    )
    assert found(got["champion"]) == champion
    assert found(got["v1"]) == champion
    assert found(got["challenger"]) == (3, {"c0": (0.5, None, "full-v3")})
    assert found(got["pruned"]) == (2, {})  # the version is known, it serves nothing now
    assert got["no alias"] is None and got["no version"] is None and got["no model"] is None
    assert got["known"] == ("v1, v2, v3", "challenger, champion")
    assert [(m["name"], m["aliases"], m["versions"]) for m in got["models"]] == [
        ("churn", {"champion": 1, "challenger": 3}, 3)
    ]
    served = {
        v["version"]: (v["aliases"], v["served_predictions"], v["published_at"] is not None)
        for v in got["model"]["versions"]
    }
    assert served == {
        1: (["champion"], 7, True),
        2: ([], None, False),
        3: (["challenger"], 1, True),
    }

    # Champion promoted to v3 and challenger gone: v1 is neither aliased nor newest, and goes;
    # the champion's lookups follow the alias at once.
    registry(migrated, settings).move_aliases("churn", {"champion": 3, "challenger": None})
    removed = serving_prune.prune(writer, "", keep=1)
    assert [(r.version, r.rows) for r in removed] == [(1, 7)]
    after = read(
        migrated,
        settings,
        {
            "champion": lookup("churn", "champion", None, wanted),
            "v1": lookup("churn", "champion", 1, wanted),
        },
    )
    assert found(after["champion"]) == (3, {"c0": (0.5, None, "full-v3")})
    assert found(after["v1"]) == (1, {})
    assert fetch_all(migrated, f"SELECT model_version_id FROM {store.SERVING_VERSIONS}") == [
        (ids[3],)
    ]
