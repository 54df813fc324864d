"""Incoming batch files: find them, check they can be read and have the contract's columns,
and read them into Spark as raw rows, before anything is written anywhere."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.contracts import Contract
from precompute.errors import PrecomputeError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Format = Literal["csv", "json", "parquet"]
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json.gz": "json",
    ".jsonl.gz": "json",
    ".parquet": "parquet",
}
CORRUPT = "_corrupt_record"
RAW = "_raw_line"
SOURCE_FILE = "_source_file"
SAMPLE_LINES = 200


class InputError(PrecomputeError):
    """The batch cannot be ingested as given: nothing was written."""


@dataclass(frozen=True)
class RawBatch:
    """The batch as read: contract columns as they came (strings for text formats)."""

    df: DataFrame
    corrupt_column: str | None  # where a text reader puts lines it could not parse
    raw_column: str | None = None  # the line exactly as it came, when the reader keeps it


def batch_files(path: str) -> list[str]:
    """The data files of a batch: one file, or every visible file under a folder."""
    if "://" not in path:
        path = os.path.abspath(path)
    fs, root = pafs.FileSystem.from_uri(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input {path} does not exist")
    if info.type == pafs.FileType.File:
        return [root]
    listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        i.path
        for i in listing
        if i.type == pafs.FileType.File
        and not any(part.startswith(("_", ".")) for part in i.path[len(root) :].split("/"))
    )
    if not files:
        raise InputError(f"input folder {path} holds no data files")
    return files


def detect_format(files: list[str]) -> Format:
    """The one format all files share, from their extensions."""
    found: dict[Format, list[str]] = {}
    unknown = []
    for name in files:
        fmt = next((f for ext, f in EXTENSIONS.items() if name.lower().endswith(ext)), None)
        if fmt is None:
            unknown.append(name)
        else:
            found.setdefault(fmt, []).append(name)
    if unknown:
        raise InputError(
            f"cannot tell the format of {', '.join(unknown[:5])}: expected extensions "
            f"{', '.join(EXTENSIONS)} (or pass --format)"
        )
    if len(found) > 1:
        raise InputError(f"a batch must have one format; found {', '.join(sorted(found))}")
    return next(iter(found))


def read_batch(spark: SparkSession, files: list[str], fmt: Format, contract: Contract) -> RawBatch:
    """Check every file up front, then read them as one DataFrame of raw rows."""
    if fmt == "parquet":
        return _read_parquet(spark, files, contract)
    if fmt == "csv":
        return _read_csv(spark, files, contract)
    return _read_json(spark, files, contract)


def check_columns(contract: Contract, present: set[str], where: str) -> None:
    missing = [c.name for c in contract.columns if c.name not in present]
    if missing:
        raise InputError(
            f"{where} is missing required columns {', '.join(missing)} (contract {contract.ref})"
        )


def _head_lines(path: str, count: int) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(path)
    try:
        with fs.open_input_stream(root, compression="detect") as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
            lines = []
            for line in text:
                lines.append(line)
                if len(lines) >= count:
                    break
            return lines
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


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
    wanted = [c.name for c in contract.columns]
    first_path, first = next(iter(schemas.items()))
    for path, schema in schemas.items():
        differ = [n for n in wanted if schema.field(n).type != first.field(n).type]
        if differ:
            raise InputError(
                f"{path} and {first_path} disagree on the types of {', '.join(differ)}"
            )
    df = spark.read.parquet(*files).select(*wanted, _source_file())
    return RawBatch(df, None)


def _read_csv(spark: SparkSession, files: list[str], contract: Contract) -> RawBatch:
    from pyspark.sql.types import StringType, StructField, StructType

    by_header: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        lines = _head_lines(path, 1)
        if not lines:
            raise InputError(f"{path} is empty: a CSV file needs at least its header line")
        header = tuple(next(csv.reader([lines[0]])))
        check_columns(contract, set(header), path)
        by_header.setdefault(header, []).append(path)
    wanted = [c.name for c in contract.columns]
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
            .csv(paths)
        )
        frames.append(frame.select(*wanted, CORRUPT, _source_file()))
    df = frames[0]
    for frame in frames[1:]:
        df = df.unionByName(frame)
    return RawBatch(df, CORRUPT)


def _read_json(spark: SparkSession, files: list[str], contract: Contract) -> RawBatch:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    seen: set[str] = set()
    for path in files:
        for line in _head_lines(path, SAMPLE_LINES):
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
    # Parse the text lines ourselves so a quarantined row keeps its line exactly as it came.
    lines = spark.read.text(files).where(F.trim("value") != "")
    parsed = F.from_json(
        "value", schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    )
    df = lines.select(parsed.alias("row"), F.col("value").alias(RAW), _source_file())
    return RawBatch(df.select("row.*", RAW, SOURCE_FILE), CORRUPT, RAW)


def _source_file() -> Any:
    from pyspark.sql import functions as F

    return F.col("_metadata.file_path").alias(SOURCE_FILE)
