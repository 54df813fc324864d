"""The serving store's layout, written once for its writer and its reader: where served
predictions live, how a partition and a staging table are named, which columns a prediction has,
how an alias picks the version a lookup reads, and the statements the lookup API reads with.

The publish and prune jobs (`jobs.serving`, `jobs.serving_prune`, psycopg2) write the store and
the lookup API (`lookup_api.crud`, asyncpg) reads it; neither spells a name of its own. The
tables are made by the migrations: sql/0004_serving.sql (predictions, serving_versions,
published_runs), sql/0007_run_outputs.sql (the `serving` schema) and sql/0002_model_registry.sql
(models, versions, aliases); tests/test_serving_store.py checks this module against them.

Every name here is a plain lower-case identifier (partition and staging names are built from a
number or hexadecimal digits), so it goes into SQL as it is: the reads below are fixed text in
asyncpg's `$n` style, and the executors' COPY is written without a connection to quote with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


# Served predictions: the parent table, partitioned by model version, one partition per served
# version in PARTITION_SCHEMA. Readers query the parent only.
PREDICTIONS = Table("precompute", "predictions")
PARTITION_SCHEMA = "serving"
# Where a run's rows are copied before they become visible (readers have no rights there).
STAGING_SCHEMA = "staging"
# One row per version with a partition: its row count and the run that last published it.
SERVING_VERSIONS = Table("precompute", "serving_versions")
# One row per published run, written in its publishing transaction.
PUBLISHED_RUNS = Table("precompute", "published_runs")
# The registry tables a lookup resolves its version through.
MODELS = Table("precompute", "models")
MODEL_VERSIONS = Table("precompute", "model_versions")
MODEL_ALIASES = Table("precompute", "model_aliases")

# A prediction's columns in table order, with their types as PostgreSQL names them: a run's
# staging table is made with them so that it can be attached as a partition as it is.
COLUMNS = (
    ("model_version_id", "bigint NOT NULL"),
    ("entity_id", "text NOT NULL"),
    ("score", "double precision NOT NULL"),
    ("label", "text"),
    ("scored_at", "timestamp with time zone NOT NULL"),
    ("run_id", "text NOT NULL"),
    # A multiclass model's {class: probability} (null for other models); last, because
    # sql/0017 added it to partitions made before it, which SELECT * must read in this order.
    ("probabilities", "jsonb"),
)
PARTITION_KEY = "model_version_id"
KEY = (PARTITION_KEY, "entity_id")  # a partition's primary key
# What a lookup returns of a prediction: all but the version, which it reports once.
SERVED_COLUMNS = tuple(name for name, _ in COLUMNS if name != PARTITION_KEY)
# A run's rows share these (its staging table's defaults); the COPY brings the rest.
RUN_COLUMNS = (PARTITION_KEY, "scored_at", "run_id")
COPY_COLUMNS = tuple(name for name, _ in COLUMNS if name not in RUN_COLUMNS)


def partition(model_version_id: int) -> Table:
    """The partition that serves a model version."""
    return Table(PARTITION_SCHEMA, f"predictions_v{model_version_id}")


def staging(run_id: str) -> Table:
    """A run's staging table: run ids are free text, table names are not."""
    return Table(STAGING_SCHEMA, "run_" + hashlib.sha256(run_id.encode()).hexdigest()[:24])


def aliased(version_id: str) -> str:
    """SQL: whether an alias points at the version `version_id` (an SQL expression). Such a
    version stays served whatever its age: a lookup by that alias reads it."""
    return f"EXISTS (SELECT 1 FROM {MODEL_ALIASES} a WHERE a.version_id = {version_id})"


# The reads of the lookup API, asyncpg style ($1, $2, ...).

# (model, alias, version or NULL, ids) -> (version, *SERVED_COLUMNS) rows; no row when the
# model has no such version or alias, one row of NULL predictions when nothing is found.
# One statement resolves the version and reads its predictions, so both come from one snapshot.
# Written for a generic plan (the pool plans it once per connection): each branch of `chosen` is
# an index lookup whichever of alias or version is given, and the predictions' partition is
# pruned at run time from the chosen version.
LOOKUP = f"""
WITH model AS (
    SELECT model_id FROM {MODELS} WHERE name = $1
), chosen AS (
    SELECT v.version_id, v.version
      FROM model JOIN {MODEL_VERSIONS} v
        ON v.model_id = model.model_id AND v.version = $3::integer
     WHERE $3::integer IS NOT NULL
    UNION ALL
    SELECT v.version_id, v.version
      FROM model
      JOIN {MODEL_ALIASES} a ON a.model_id = model.model_id AND a.alias = $2
      JOIN {MODEL_VERSIONS} v ON v.version_id = a.version_id
     WHERE $3::integer IS NULL
)
SELECT c.version, {", ".join(f"p.{name}" for name in SERVED_COLUMNS)}
  FROM chosen c
  LEFT JOIN {PREDICTIONS} p
         ON p.{PARTITION_KEY} = c.version_id AND p.entity_id = ANY($4::text[])
"""

# (model) -> one row: its versions ('v1, v2') and aliases ('champion, ...'); none if no model.
VERSIONS_AND_ALIASES = f"""
SELECT (SELECT string_agg('v' || v.version, ', ' ORDER BY v.version)
          FROM {MODEL_VERSIONS} v WHERE v.model_id = m.model_id),
       (SELECT string_agg(a.alias, ', ' ORDER BY a.alias)
          FROM {MODEL_ALIASES} a WHERE a.model_id = m.model_id)
  FROM {MODELS} m WHERE m.name = $1
"""

# () -> per model: name, task, description, {alias: version number}, how many versions.
MODELS_LIST = f"""
SELECT m.name, m.task, m.description,
       coalesce((SELECT jsonb_object_agg(a.alias, v.version)
                   FROM {MODEL_ALIASES} a
                   JOIN {MODEL_VERSIONS} v USING (version_id)
                  WHERE a.model_id = m.model_id), '{{}}'),
       (SELECT count(*) FROM {MODEL_VERSIONS} v WHERE v.model_id = m.model_id)
  FROM {MODELS} m ORDER BY m.name
"""

# (model) -> per version (one row of NULL versions for a model without any): name, task,
# description, version, kind, metrics, registered at, its aliases, rows served and when they
# were published (NULL when the version has no partition).
MODEL_DETAIL = f"""
SELECT m.name, m.task, m.description, v.version, v.model_kind, v.metrics, v.created_at,
       coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM {MODEL_ALIASES} a
                  WHERE a.version_id = v.version_id), '{{}}'),
       s.row_count, s.published_at
  FROM {MODELS} m
  LEFT JOIN {MODEL_VERSIONS} v ON v.model_id = m.model_id
  LEFT JOIN {SERVING_VERSIONS} s ON s.model_version_id = v.version_id
 WHERE m.name = $1 ORDER BY v.version
"""
