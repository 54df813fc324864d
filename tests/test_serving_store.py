"""The serving store's writer and reader agree through its one layout (`precompute.serving_store`):
rows published by the jobs' side (`jobs.serving`, psycopg2, without Spark: the COPY the executors
run is made here) and pruned (`jobs.serving_prune`) are read back by the lookup API's reads
(`lookup_api.crud`, asyncpg, as the API's pool runs them), on a freshly migrated database."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import shutil
from pathlib import Path
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
# entity_id, score, label, probabilities (JSON; left out: null): store.COPY_COLUMNS
Row = tuple[str, float, str | None] | tuple[str, float, str | None, str]


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
    csv.writer(text).writerows(row if len(row) == 4 else (*row, None) for row in rows)
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
    # v3 is a multiclass model: its rows carry every class's probability.
    multiclass = ("c0", 0.5, "b", '{"a": 0.25, "b": 0.5, "c": 0.25}')
    assert publish(migrated, settings, "full-v3", ids[3], [multiclass]) == "swap"
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
    assert found(got["challenger"]) == (3, {"c0": (0.5, "b", "full-v3")})
    assert got["challenger"][1][0]["probabilities"] == {"a": 0.25, "b": 0.5, "c": 0.25}
    assert got["champion"][1][0]["probabilities"] is None  # binary: none
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
    assert found(after["champion"]) == (3, {"c0": (0.5, "b", "full-v3")})
    assert found(after["v1"]) == (1, {})
    assert fetch_all(migrated, f"SELECT model_version_id FROM {store.SERVING_VERSIONS}") == [
        (ids[3],)
    ]
    # Analysts filter the multiclass champion's classes in SQL, one row per class.
    assert fetch_all(
        database.with_role(migrated, "reader", settings),
        "SELECT entity_id, class, probability, predicted "
        "FROM analytics.current_class_probabilities WHERE probability >= 0.25 ORDER BY class",
    ) == [("c0", "a", 0.25, False), ("c0", "b", 0.5, True), ("c0", "c", 0.25, False)]


def test_binary_predictions_served_before_the_class_probabilities_migration_keep_serving(
    fresh_database: str, settings: Settings, tmp_path: Path
) -> None:
    """A database served binary predictions under the layout before sql/0017; after it, they
    read as before (no probabilities), and an upsert into their partition still lines up."""
    before = tmp_path / "sql"
    shutil.copytree(migrations.migrations_dir(), before)
    added = before / "0017_class_probabilities.sql"
    added.unlink()
    migrations.migrate(fresh_database, settings, before)
    fetch_all(database.with_role(fresh_database, "writer", settings), SEED)
    ids = version_ids(fresh_database)
    # Served the old way: the COPY names the three columns a release before 0017 copied.
    writer = database.with_role(fresh_database, "writer", settings)
    pub = serving.Publication("full-old", "full", ids[1], SCORED_AT, 4)
    fetch_all(
        fresh_database,
        "INSERT INTO precompute.runs (run_id, mode, model_version_id, state) "
        "VALUES ('full-old', 'full', %s, 'running')",
        (ids[1],),
    )
    serving.prepare(writer, "", pub)
    old_copy = serving.copy_statement(pub).replace(", probabilities)", ")")
    assert old_copy != serving.copy_statement(pub)
    with database.connect(writer) as connection, connection.cursor() as cur:
        cur.execute(
            "ALTER TABLE {} DROP COLUMN probabilities".format(".".join(pub.staging.strings))
        )
        old_rows = "c0,0.9,true\nc1,0.2,false\nc3,0.1,false\nc4,0.4,false\n"
        cur.copy_expert(old_copy, io.StringIO(old_rows))
    serving.index(writer, "", pub)
    serving.apply(writer, "", pub, "swap")
    registry(fresh_database, settings).move_aliases("churn", {"champion": 1})

    migrations.migrate(fresh_database, settings)  # applies 0017 only
    assert publish(fresh_database, settings, "inc-new", ids[1], [("c2", 0.7, "true")]) == "upsert"
    # A batch as big as what is served merges the served rows into a new partition.
    merged: list[Row] = [("c3", 0.6, "true"), ("c5", 0.3, "false"), ("c6", 0.1, "false")]
    assert publish(fresh_database, settings, "inc-merge", ids[1], merged) == "merge"
    got = read(fresh_database, settings, {"v1": lookup("churn", "champion", None, ["c0", "c2"])})
    assert got["v1"] is not None
    assert {p["entity_id"]: (p["score"], p["label"], p["probabilities"]) for p in got["v1"][1]} == {
        "c0": (0.9, "true", None),
        "c2": (0.7, "true", None),
    }
    reader = database.with_role(fresh_database, "reader", settings)
    assert fetch_all(
        reader,
        "SELECT entity_id, score, probabilities FROM analytics.current_predictions "
        "ORDER BY entity_id",
    ) == [
        ("c0", 0.9, None),
        ("c1", 0.2, None),
        ("c2", 0.7, None),
        ("c3", 0.6, None),
        ("c4", 0.4, None),
        ("c5", 0.3, None),
        ("c6", 0.1, None),
    ]
    assert fetch_all(reader, "SELECT count(*) FROM analytics.current_class_probabilities") == [(0,)]
