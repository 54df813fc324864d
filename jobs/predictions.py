"""The Delta `predictions` table: every prediction of every run, kept as history.

One row per entity per run. `probabilities` holds a multiclass model's probability of each
class, by class (null for other models); tables written before it existed gain it on the next
append. Columns that are the same for a whole run (model, version, run id,
scoring time) are written as constants where the files are written, so they cost nothing to
carry through Spark. The table is partitioned by the scoring date; a run's rows are found by
that date (partition pruning) and its run id (Parquet statistics skip other runs' row groups).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from jobs.lake import Lake, Target

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TABLE = "predictions"
# What the scoring function returns per row; the rest of COLUMNS are constants of the run.
SCORED_SCHEMA = "entity_id string, score double, label string, probabilities map<string, double>"
COLUMNS = (
    "entity_id",
    "score",
    "label",
    "model",
    "model_version_id",
    "run_id",
    "scored_at",
    "scored_date",
    "probabilities",
)
PARTITION_BY = ("scored_date",)


def target(model: str, model_version_id: int, run_id: str, scored_at: datetime.datetime) -> Target:
    """Where one run's predictions go."""
    return Target(
        TABLE,
        COLUMNS,
        PARTITION_BY,
        constants={
            "model": model,
            "model_version_id": model_version_id,
            "run_id": run_id,
            "scored_at": scored_at,
            "scored_date": scored_at.astimezone(datetime.UTC).date(),
        },
        stats_columns=("run_id", "model_version_id", "entity_id"),
        adds_columns=True,
    )


def run_rows(engine: Lake, run_id: str, scored_at: datetime.datetime) -> DataFrame:
    """The predictions one run wrote."""
    from pyspark.sql import functions as F  # pyspark is heavy: only when a job runs

    # The partition is the UTC date; a timestamp read back from PostgreSQL may carry another zone.
    day = scored_at.astimezone(datetime.UTC).date()
    return engine.read(TABLE).where(
        (F.col("scored_date") == F.lit(day)) & (F.col("run_id") == F.lit(run_id))
    )
