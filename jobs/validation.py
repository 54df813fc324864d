"""Row validation against a dataset contract, as Spark expressions (no Python per row).

Every raw row comes out once, routed to `incoming` (typed, ready to score) or to `quarantine`
(its raw content and a list of machine-readable reasons). Reason codes:

- `type_error`: a value that does not parse as the column's type (or a non-finite number);
- `null_required`: no value in a column that must have one (a blank entity id counts);
- `out_of_range`: below `min`, above `max`, or longer than `max_length`;
- `unknown_category`: a string outside the column's `allowed` values;
- `duplicate_entity_id`: the entity id appears more than once in the batch (every copy is
  quarantined: nothing says which one is right);
- `corrupt_line`: a line the CSV or JSON reader could not parse at all.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from jobs.contracts import Column, Contract
from jobs.lake import Target
from jobs.landing import SOURCE_FILE, RawBatch

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame

ROUTE = "_route"
INCOMING = "incoming"
QUARANTINE = "quarantine"
QUARANTINE_TABLE = "quarantine"
QUARANTINE_COLUMNS = (
    "dataset",
    "contract_version",
    "batch_id",
    "entity_id",
    "source_file",
    "raw",
    "reasons",
    "ingested_at",
    "ingest_date",
)
# Quarantine-only columns carry a prefix in the validated rows, so a contract column that
# shares a name with one (an id column called entity_id, say) does not collide with it.
QUARANTINE_ONLY = ("entity_id", "source_file", "raw", "reasons")
INGEST_COLUMNS = ("batch_id", "ingested_at", "ingest_date")
PARTITION_BY = ("ingest_date",)
# Above this many duplicated ids, let Spark plan the join instead of broadcasting the set.
BROADCAST_DUPLICATES = 2_000_000
FRACTIONAL = ("double", "float")


def incoming_table(dataset: str) -> str:
    """The Delta table a dataset's accepted rows are appended to."""
    return f"incoming/{dataset}"


def targets(contract: Contract, batch_id: str, ingested_at: datetime.datetime) -> dict[str, Target]:
    """Where validated rows go: the dataset's incoming table and the shared quarantine."""
    columns = [c.name for c in contract.columns] + list(INGEST_COLUMNS)
    constants = {
        "batch_id": batch_id,
        "ingested_at": ingested_at.astimezone(datetime.UTC),
        "ingest_date": ingested_at.astimezone(datetime.UTC).date(),
    }
    return {
        INCOMING: Target(
            incoming_table(contract.name),
            columns,
            PARTITION_BY,
            constants=constants,
            stats_columns=("batch_id", contract.entity_id.name),
        ),
        QUARANTINE: Target(
            QUARANTINE_TABLE,
            QUARANTINE_COLUMNS,
            PARTITION_BY,
            sources={name: f"_q_{name}" for name in QUARANTINE_ONLY},
            constants=constants | {"dataset": contract.name, "contract_version": contract.version},
            stats_columns=("dataset", "batch_id"),
        ),
    }


def validate(raw: RawBatch, contract: Contract) -> DataFrame:
    """Type every column, check every rule, and route each row with its reasons."""
    from pyspark.sql import functions as F

    # Each step is its own projection and later steps refer to its columns by name: Spark
    # then computes a typed value or the row's verdict once, instead of once per use.
    df = raw.df
    source_types = dict(df.dtypes)
    typed_columns = []
    checks: list[tuple[SparkColumn, str, str]] = []
    for column in contract.columns:
        value, type_error = _typed(column, source_types[column.name])
        typed_columns.append(value.alias(f"_t_{column.name}"))
        checks.append((type_error, "type_error", column.name))
        checks += _rules(column, F.col(f"_t_{column.name}"))
    entity = contract.entity_id.name
    if contract.entity_id.type == "string":
        checks.append((F.trim(F.col(f"_t_{entity}")) == "", "null_required", entity))
    corrupt = F.col(raw.corrupt_column).isNotNull() if raw.corrupt_column else F.lit(False)
    df = df.select("*", *typed_columns, corrupt.alias("_corrupt"))

    df = df.withColumn("_id", F.when(~F.col("_corrupt"), F.col(f"_t_{entity}")))
    df = _flag_duplicates(df)
    checks.append((F.col("_dup"), "duplicate_entity_id", entity))

    flags = [F.coalesce(condition, F.lit(False)) for condition, _, _ in checks]
    # One predicate, not a chain of ORs: Spark would split "not bad" into its conjuncts and push
    # the ones that do not need the duplicate flag below the join, into one filter too large to
    # compile, which it then interprets row by row (5x slower ingest, measured).
    df = df.withColumn("_bad", F.greatest(F.col("_corrupt"), *flags))

    reasons = F.when(F.col("_corrupt"), F.array(_reason("corrupt_line", None))).otherwise(
        F.array_compact(
            F.array(
                *[
                    F.when(flag, _reason(code, name))
                    for flag, (_, code, name) in zip(flags, checks, strict=True)
                ]
            )
        )
    )
    if raw.raw_column is not None:
        raw_text = F.col(raw.raw_column)
    else:
        raw_text = F.to_json(F.struct(*[F.col(c.name) for c in contract.columns]))
        if raw.corrupt_column is not None:
            raw_text = F.coalesce(F.col(raw.corrupt_column), raw_text)
    is_bad = F.col("_bad")
    # Quarantine columns are null on accepted rows, so they cost next to nothing to move.
    return df.select(
        *[F.col(f"_t_{c.name}").alias(c.name) for c in contract.columns],
        F.when(is_bad, F.col(entity).cast("string")).alias("_q_entity_id"),
        F.when(is_bad, F.col(SOURCE_FILE)).alias("_q_source_file"),
        F.when(is_bad, raw_text).alias("_q_raw"),
        F.when(is_bad, reasons).alias("_q_reasons"),
        F.when(is_bad, F.lit(QUARANTINE)).otherwise(F.lit(INCOMING)).alias(ROUTE),
    )


def _typed(column: Column, source_type: str) -> tuple[SparkColumn, SparkColumn]:
    """The value in the contract's type, and when the raw value failed to become it."""
    from pyspark.sql import functions as F

    raw = F.col(column.name)
    present = raw.isNotNull()
    if column.type == "string":
        return raw.cast("string"), F.lit(False)
    if column.type == "double":
        parsed = raw.try_cast("double")
        finite = parsed.isNotNull() & ~F.isnan(parsed) & (F.abs(parsed) != float("inf"))
        return F.when(finite, parsed), present & ~finite
    target = {"long": "bigint", "boolean": "boolean", "date": "date", "timestamp": "timestamp"}
    value = raw.try_cast(target[column.type])
    failed = present & value.isNull()
    if column.type == "long" and source_type in FRACTIONAL:
        failed = failed | (present & (value != raw))  # 1.5 is not a long, even if it casts
        value = F.when(~failed, value)
    return value, failed


def _rules(column: Column, value: SparkColumn) -> list[tuple[SparkColumn, str, str]]:
    from pyspark.sql import functions as F

    name = column.name
    rules = []
    if not column.nullable:
        rules.append((F.col(name).isNull(), "null_required", name))
    if column.min is not None:
        rules.append((value < F.lit(column.min), "out_of_range", name))
    if column.max is not None:
        rules.append((value > F.lit(column.max), "out_of_range", name))
    if column.max_length is not None:
        rules.append((F.length(value) > column.max_length, "out_of_range", name))
    if column.allowed is not None:
        rules.append((~value.isin(list(column.allowed)), "unknown_category", name))
    return rules


def _flag_duplicates(df: DataFrame) -> DataFrame:
    """Add `_dup`: the row's entity id occurs more than once in the batch."""
    from pyspark.sql import functions as F

    duplicated = (
        df.where(F.col("_id").isNotNull())
        .groupBy("_id")
        .count()
        .where(F.col("count") > 1)
        .select("_id", F.lit(True).alias("_dup"))
        .persist()
    )
    # Counting ids reads one column; knowing the set is small lets the wide rows stay where
    # they are (a broadcast join) instead of being shuffled by id.
    if duplicated.count() <= BROADCAST_DUPLICATES:
        duplicated = F.broadcast(duplicated)
    return df.join(duplicated, on="_id", how="left")


def _reason(code: str, column: str | None) -> SparkColumn:
    from pyspark.sql import functions as F

    return F.struct(F.lit(code).alias("code"), F.lit(column).cast("string").alias("column"))
