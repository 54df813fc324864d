"""Row validation against a dataset contract, as Spark expressions (no Python per row).

Every raw row comes out once, routed to `incoming` (typed, ready to score) or to `quarantine`
(its raw content and a list of machine-readable reasons). The per-value rules are the
contract's rule set (`precompute.rules`: type_error, null_required, invalid_id, out_of_range,
unknown_category), which the lookup API runs in Python on score requests; ingest adds the
batch-level ones:

- `duplicate_entity_id`: the entity id appears more than once in the batch (every copy is
  quarantined: nothing says which one is right);
- `corrupt_line`: a line the CSV or JSON reader could not parse at all;
- `encoding_error`: a row whose bytes are not valid text in the contract's encoding (kept as
  it came, one character per byte).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from jobs.lake import Target
from jobs.raw_batch import SOURCE_FILE, RawBatch
from precompute import rules
from precompute.contracts import Column, Contract

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
# The batch-level reason codes; with the rule set's, every code a quarantined row can carry.
DUPLICATE_ID = "duplicate_entity_id"
CORRUPT_LINE = "corrupt_line"
ENCODING_ERROR = "encoding_error"
REASON_CODES = (*dict.fromkeys(rules.CODES.values()), DUPLICATE_ID, CORRUPT_LINE, ENCODING_ERROR)


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
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

    # Each step is its own projection and later steps refer to its columns by name: Spark
    # then computes a typed value or the row's verdict once, instead of once per use.
    df = raw.df
    source_types = dict(df.dtypes)
    typed_columns = []
    type_errors = {}
    for column in contract.columns:
        value, type_errors[column.name] = _typed(column, source_types[column.name])
        typed_columns.append(value.alias(f"_t_{column.name}"))
    checks: list[tuple[SparkColumn, str, str]] = [
        (_condition(rule, type_errors[rule.column.name]), rule.code, rule.column.name)
        for rule in rules.row_rules(contract)
    ]
    entity = contract.entity_id.name
    unreadable = F.lit(False)
    if raw.corrupt_column:
        unreadable = F.col(raw.corrupt_column).isNotNull()
    if raw.encoding_column:
        unreadable = unreadable | F.col(raw.encoding_column)
    df = df.select("*", *typed_columns, unreadable.alias("_corrupt"))

    df = df.withColumn("_id", F.when(~F.col("_corrupt"), F.col(f"_t_{entity}")))
    df = _flag_duplicates(df)
    checks.append((F.col("_dup"), DUPLICATE_ID, entity))

    flags = [F.coalesce(condition, F.lit(False)) for condition, _, _ in checks]
    # One predicate, not a chain of ORs: Spark would split "not bad" into its conjuncts and push
    # the ones that do not need the duplicate flag below the join, into one filter too large to
    # compile, which it then interprets row by row (5x slower ingest, measured).
    df = df.withColumn("_bad", F.greatest(F.col("_corrupt"), *flags))

    why_unreadable = _reason(CORRUPT_LINE, None)
    if raw.encoding_column:
        why_unreadable = F.when(
            F.col(raw.encoding_column), _reason(ENCODING_ERROR, None)
        ).otherwise(why_unreadable)
    reasons = F.when(F.col("_corrupt"), F.array(why_unreadable)).otherwise(
        F.array_compact(
            F.array(
                *[
                    F.when(flag, _reason(code, name))
                    for flag, (_, code, name) in zip(flags, checks, strict=True)
                ]
            )
        )
    )
    # The row as it came: the reader's copy where it keeps one (a JSON line, a CSV row whose
    # bytes are not text), the unparsable line, or the fields as JSON.
    raw_text = F.to_json(F.struct(*[F.col(c.name) for c in contract.columns]))
    if raw.corrupt_column is not None:
        raw_text = F.coalesce(F.col(raw.corrupt_column), raw_text)
    if raw.raw_column is not None:
        raw_text = F.coalesce(F.col(raw.raw_column), raw_text)
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


def reason_counts() -> list[SparkColumn]:
    """Aggregates over validated rows, one per reason code (aliased by it): how many rows carry
    the code. A row counts once per code, however many of its columns broke that rule; accepted
    rows carry no reasons and count for none."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

    def carries(code: str) -> SparkColumn:
        return F.exists(F.col("_q_reasons"), lambda reason: reason["code"] == F.lit(code))

    return [F.count(F.when(carries(code), 1)).alias(code) for code in REASON_CODES]


def _typed(column: Column, source_type: str) -> tuple[SparkColumn, SparkColumn]:
    """The value in the contract's type, and when the raw value failed to become it. Text must
    have the type's exact form (`rules.TEXT_FORMS`) before it is converted; a typed Parquet
    column arrives in a type `jobs.batch_reader` checked fits."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

    raw = F.col(column.name)
    present = raw.isNotNull()
    if column.type == "string":
        return raw.cast("string"), F.lit(False)
    target = SPARK_TYPES[column.type]
    if source_type == "string":
        value = F.when(raw.rlike(rules.TEXT_FORMS[column.type]), raw.try_cast(target))
    else:
        value = raw.try_cast(target)
        if column.type == "double" and source_type == "bigint":
            # Above 2^53 an int64 has no exact double: refuse rather than round it.
            value = F.when(value.cast("bigint") == raw, value)
    if column.type == "double":
        value = F.when(~F.isnan(value) & (F.abs(value) != float("inf")), value)
    if column.type == "timestamp":
        low, high = rules.TIMESTAMP_RANGE
        value = F.when(
            value.between(F.lit(low).cast("timestamp"), F.lit(high).cast("timestamp")), value
        )
    return value, present & value.isNull()


SPARK_TYPES = {
    "long": "bigint",
    "double": "double",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
}


def _condition(rule: rules.Rule, type_error: SparkColumn) -> SparkColumn:
    """When a row breaks `rule`, as `rules.check_record` decides it for one record."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

    name = rule.column.name
    value = F.col(f"_t_{name}")
    check = rule.check
    if check == "type":
        return type_error
    if check == "required":
        return F.col(name).isNull()
    if check == "not_blank":
        return F.trim(value) == ""
    if check == "no_control":
        return value.rlike(rules.CONTROL_CHARACTERS)
    if check in ("id_length", "max_length"):
        return F.length(value) > int(rule.limit)
    if check == "min":
        return value < F.lit(rule.limit)
    if check == "max":
        return value > F.lit(rule.limit)
    return ~value.isin(list(rule.limit))  # allowed


def _flag_duplicates(df: DataFrame) -> DataFrame:
    """Add `_dup`: the row's entity id occurs more than once in the batch."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

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
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job validates

    return F.struct(F.lit(code).alias("code"), F.lit(column).cast("string").alias("column"))
