"""Read a batch's files into Spark as raw rows, one reader per format, after checking every file
up front (readable, the contract's columns, Parquet types that fit the contract)."""

from __future__ import annotations

import csv
import json
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs.batch_files import UTF8, Format, InputError, check_columns, head_lines
from jobs.raw_batch import CORRUPT, ENCODING_ERROR, RAW, SOURCE_FILE, RawBatch
from precompute.contracts import Contract

SAMPLE_LINES = 200
# Text is read as ISO-8859-1, one character per byte whatever the bytes are, and decoded as
# UTF-8 afterwards, field by field: a field whose bytes are not UTF-8 is then seen as such
# (readers otherwise put U+FFFD in its place without a word), and kept as it came.
BYTES = "ISO-8859-1"
BOM = "\ufeff"


def read_batch(spark: SparkSession, files: list[str], fmt: Format, contract: Contract) -> RawBatch:
    """Check every file up front, then read them as one DataFrame of raw rows."""
    if fmt == "parquet":
        return _read_parquet(spark, files, contract)
    if fmt == "csv":
        return _read_csv(spark, files, contract)
    return _read_json(spark, files, contract)


def _read_parquet(spark: SparkSession, files: list[str], contract: Contract) -> RawBatch:
    schemas = {}
    for path in files:
        fs, root = pafs.FileSystem.from_uri(path)
        try:
            schemas[path] = pq.read_schema(root, filesystem=fs)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read Parquet file {path}: {exc}") from exc
    for path, schema in schemas.items():
        check_columns(contract, set(schema.names), path)
        for column in contract.columns:
            found = schema.field(column.name).type
            if not _fits(found, column.type):
                raise InputError(
                    f"{path}: column {column.name} is {found} in Parquet but contract "
                    f"{contract.ref} declares {column.type}; refusing it rather than "
                    f"reinterpreting the values (write it as {PARQUET_TYPES[column.type]})"
                )
    wanted = [c.name for c in contract.columns]
    first_path, first = next(iter(schemas.items()))
    for path, schema in schemas.items():
        differ = [n for n in wanted if schema.field(n).type != first.field(n).type]
        if differ:
            raise InputError(
                f"{path} and {first_path} disagree on the types of {', '.join(differ)}"
            )
    df = spark.read.parquet(*files).select(
        *[_parquet_column(c.name, first) for c in contract.columns], _source_file()
    )
    return RawBatch(df, None)


def _parquet_column(name: str, schema: pa.Schema) -> Any:
    """The column as Spark should see it: nanosecond timestamps arrive as their count of
    nanoseconds (Spark has no such type) and become microseconds, Delta's precision."""
    found = schema.field(name).type
    if pa.types.is_timestamp(found) and found.unit == "ns":
        return F.timestamp_micros(F.floor(F.col(name) / 1000)).alias(name)
    return F.col(name)


# Parquet types a contract type takes as they are (a converting reader would turn an int64 into
# a timestamp in the year 294247, or a boolean into a count). Text in any of them is read by the
# type's text rules, as CSV is.
PARQUET_TYPES = {
    "string": "string (or integers, for ids)",
    "long": "a signed or unsigned integer up to 32 bits, int64, or text",
    "double": "a floating point number, an integer, a decimal, or text",
    "boolean": "boolean or text",
    "date": "date or text",
    "timestamp": "timestamp or text",
}


def _fits(found: pa.DataType, wanted: str) -> bool:
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_string(found) or pa.types.is_large_string(found):
        return True
    if wanted in ("string", "long"):  # ids may be numbers; uint64 does not fit a long
        return bool(pa.types.is_integer(found) and not pa.types.is_uint64(found))
    if wanted == "double":
        numbers = (pa.types.is_floating, pa.types.is_integer, pa.types.is_decimal)
        return any(bool(kind(found)) for kind in numbers)
    if wanted == "boolean":
        return bool(pa.types.is_boolean(found))
    if wanted == "date":
        return bool(pa.types.is_date(found))
    return bool(pa.types.is_timestamp(found))


def _read_csv(spark: SparkSession, files: list[str], contract: Contract) -> RawBatch:
    """RFC 4180 CSV: quoted fields may hold separators, doubled quotes and line breaks; a
    byte-order mark is ignored; fields not valid in the contract's encoding are flagged."""
    by_header: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        lines = head_lines(path, 1, contract.encoding)
        if not lines:
            raise InputError(f"{path} is empty: a CSV file needs at least its header line")
        header = tuple(next(csv.reader([lines[0]])))
        check_columns(contract, set(header), path)
        by_header.setdefault(header, []).append(path)
    wanted = [c.name for c in contract.columns]
    as_bytes = contract.encoding == UTF8
    frames = []
    for header, paths in by_header.items():
        # Read every field as text, in the file's own column order: types are checked later,
        # row by row, so one bad value quarantines one row instead of failing the batch.
        schema = StructType(
            [StructField(name, StringType()) for name in header]
            + [StructField(CORRUPT, StringType())]
        )
        frame = (
            spark.read.schema(schema)
            .option("header", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .option("escape", '"')  # RFC 4180: a quote inside a quoted field is doubled
            .option("multiLine", True)  # and a quoted field may span lines
            .option("encoding", BYTES if as_bytes else contract.encoding)
            .csv(paths)
        )
        frames.append(frame.select(*wanted, CORRUPT, _source_file()))
    df = frames[0]
    for frame in frames[1:]:
        df = df.unionByName(frame)
    texts = [*wanted, CORRUPT]
    if as_bytes:
        decoded = {name: _utf8(F.col(name)) for name in texts}
        bad = [F.col(name).isNotNull() & decoded[name].isNull() for name in texts]
    else:  # the JVM decoded it, writing U+FFFD for bytes not valid in the encoding
        decoded = {name: F.col(name) for name in texts}
        bad = [F.coalesce(F.col(name).contains("\ufffd"), F.lit(False)) for name in texts]
    invalid = F.greatest(*bad)
    # A row with bytes that are not text keeps them as they came, one character per byte.
    kept = F.when(invalid, F.to_json(F.struct(*[F.col(n) for n in wanted])))
    df = df.select(
        *[decoded[n].alias(n) for n in wanted],
        F.coalesce(decoded[CORRUPT], F.col(CORRUPT)).alias(CORRUPT),
        kept.alias(RAW),
        invalid.alias(ENCODING_ERROR),
        SOURCE_FILE,
    )
    return RawBatch(df, CORRUPT, RAW, ENCODING_ERROR)


def _read_json(spark: SparkSession, files: list[str], contract: Contract) -> RawBatch:
    """JSON lines, in UTF-8 as JSON requires; a line that is not valid UTF-8 is flagged and
    kept as it came (one character per byte)."""
    if contract.encoding != UTF8:
        raise InputError(
            f"contract {contract.ref} declares {contract.encoding} text, but JSON lines are "
            "UTF-8 (RFC 8259): convert the files, or send CSV"
        )
    seen: set[str] = set()
    for path in files:
        for line in head_lines(path, SAMPLE_LINES):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a corrupt line is quarantined later, not a reason to stop here
            if isinstance(record, dict):
                seen.update(record)
    if seen:
        check_columns(contract, seen, f"the batch ({len(files)} JSON files)")
    schema = StructType(
        [StructField(c.name, StringType()) for c in contract.columns]
        + [StructField(CORRUPT, StringType())]
    )
    # Spark's text reader keeps each line's bytes as they are: check them before parsing, and
    # parse the lines ourselves so a quarantined row keeps its line exactly as it came.
    lines = spark.read.text(files).where(F.trim("value") != "")
    text = F.regexp_replace(F.try_validate_utf8("value"), f"^{BOM}", "")
    invalid = F.try_validate_utf8("value").isNull()
    parsed = F.from_json(text, schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
    as_came = F.when(invalid, F.decode(F.col("value").cast("binary"), BYTES)).otherwise(text)
    df = lines.select(
        parsed.alias("row"), as_came.alias(RAW), invalid.alias(ENCODING_ERROR), _source_file()
    )
    return RawBatch(
        df.select("row.*", RAW, ENCODING_ERROR, SOURCE_FILE), CORRUPT, RAW, ENCODING_ERROR
    )


def _utf8(column: Any) -> Any:
    """A column read as ISO-8859-1, decoded as UTF-8; null where its bytes are not UTF-8."""
    # Casting binary to string copies the bytes unchecked; try_validate_utf8 then checks them.
    return F.try_validate_utf8(F.encode(column, BYTES).cast("string"))


def _source_file() -> Any:
    return F.col("_metadata.file_path").alias(SOURCE_FILE)
