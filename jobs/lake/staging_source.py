"""A Spark Python data source that stages Parquet files for a later Delta commit.

Executors write Arrow batches as Parquet files under a staging folder outside every table, one
set of files per target table (rows routed by a column), and the driver-side commit writes a
manifest listing them. Nothing here touches a Delta table: `delta_rs.DeltaRsStagedWrite` moves
the files in and commits them in one transaction, so a job that dies while writing leaves the
tables and their folders exactly as they were.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import pickle
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

FORMAT = "precompute_staging"
MANIFEST = "_manifest.json"


@dataclass
class StagedFile:
    target: str
    path: str  # relative to the target table's root, hive-style partition folders included
    size: int
    partition_values: dict[str, str | None]
    num_rows: int
    stats: str  # Delta add-action statistics (JSON)


@dataclass
class StageMessage(WriterCommitMessage):
    files: list[StagedFile] = field(default_factory=list)


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def decode_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def encode_extras(extras: dict[str, dict[str, Any]]) -> str:
    return base64.b64encode(pickle.dumps(extras)).decode()


def decode_extras(text: str) -> dict[str, dict[str, Any]]:
    # Only ever our own encode_extras output, passed through Spark's write options.
    return pickle.loads(base64.b64decode(text)) if text else {}


def partition_value(value: Any) -> str | None:
    """A partition value as Delta serialises it in the log."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def _file_stats(metadata: pq.FileMetaData) -> str:
    """numRecords, nullCount, and min/max of numeric columns (enough for data skipping)."""
    null_count: dict[str, int] = {}
    minimum: dict[str, float | int] = {}
    maximum: dict[str, float | int] = {}
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            name = column.path_in_schema
            stats = column.statistics
            if "." in name or stats is None:
                continue  # nested fields carry no top-level statistics
            null_count[name] = null_count.get(name, 0) + (stats.null_count or 0)
            if stats.has_min_max and column.physical_type in ("INT32", "INT64", "DOUBLE", "FLOAT"):
                if column.physical_type.startswith("INT") and stats.logical_type.type not in (
                    "NONE",
                    "INT",
                ):
                    continue  # dates and timestamps need Delta's string forms; skip them
                minimum[name] = min(minimum.get(name, stats.min), stats.min)
                maximum[name] = max(maximum.get(name, stats.max), stats.max)
    return json.dumps(
        {
            "numRecords": metadata.num_rows,
            "minValues": minimum,
            "maxValues": maximum,
            "nullCount": null_count,
        }
    )


class _TargetSpec:
    def __init__(
        self,
        name: str,
        spec: dict[str, Any],
        extras: dict[str, Any],
        rows: pa.Schema,
    ) -> None:
        self.name = name
        self.columns: list[str] = spec["columns"]
        self.sources: dict[str, str] = spec["sources"]
        self.partition_by: list[str] = spec["partition_by"]
        self.constants = {c: pa.scalar(v) for c, v in extras.get("values", {}).items()}
        self.json_columns: dict[str, pa.DataType] = extras.get("json", {})
        self.schema = pa.schema([self._field(c, rows) for c in self.columns])
        self.data_columns = [c for c in self.columns if c not in self.partition_by]
        self.file_schema = pa.schema([self.schema.field(c) for c in self.data_columns])
        self.fixed_partition = all(c in self.constants for c in self.partition_by)
        self.dictionary_columns = [
            f.name
            for f in self.file_schema
            if pa.types.is_string(f.type) or pa.types.is_binary(f.type)
        ]

    def _field(self, column: str, rows: pa.Schema) -> pa.Field:
        if column in self.constants:
            return pa.field(column, self.constants[column].type)
        if column in self.json_columns:
            return pa.field(column, self.json_columns[column])
        return rows.field(self.sources[column]).with_name(column)

    def table(self, rows: pa.RecordBatch, columns: Sequence[str]) -> pa.Table:
        """The target's `columns` for these rows, constants filled in, in the table's types."""
        arrays = []
        for column in columns:
            field = self.schema.field(column)
            if column in self.constants:
                arrays.append(pa.repeat(self.constants[column], rows.num_rows))
            else:
                array = rows.column(self.sources[column])
                if column in self.json_columns:
                    values = [None if v is None else json.loads(v) for v in array.to_pylist()]
                    array = pa.array(values, type=field.type)
                arrays.append(array if array.type == field.type else array.cast(field.type))
        return pa.Table.from_arrays(
            arrays, schema=pa.schema([self.schema.field(c) for c in columns])
        )


class StagingWriter(DataSourceArrowWriter):
    def __init__(self, options: dict[str, str], schema: StructType) -> None:
        self.staging_uri = options["staging_uri"]
        self.route_column = options.get("route_column") or None
        # Spark hands timestamps to Python in the session time zone, which jobs pin to UTC.
        rows = to_arrow_schema(schema, timezone="UTC", prefers_large_types=False)
        extras = decode_extras(options.get("extras", ""))
        self.targets = [
            _TargetSpec(name, spec, extras.get(name, {}), rows)
            for name, spec in json.loads(options["targets"]).items()
        ]

    def write(self, iterator: Iterator[pa.RecordBatch]) -> StageMessage:
        fs, root = pafs.FileSystem.from_uri(self.staging_uri)
        task = uuid.uuid4().hex
        writers: dict[tuple[str, tuple[Any, ...]], tuple[pq.ParquetWriter, str]] = {}
        files: list[StagedFile] = []
        try:
            for batch in iterator:
                for target in self.targets:
                    rows = self._routed(batch, target.name)
                    if rows.num_rows:
                        self._write_rows(fs, root, task, target, rows, writers)
            for (target_name, values), (writer, path) in writers.items():
                writer.close()
                target = next(t for t in self.targets if t.name == target_name)
                metadata = writer.writer.metadata
                files.append(
                    StagedFile(
                        target=target_name,
                        path=path,
                        size=fs.get_file_info(f"{root}/{target_name}/{path}").size,
                        partition_values={
                            column: partition_value(value)
                            for column, value in zip(target.partition_by, values, strict=True)
                        },
                        num_rows=metadata.num_rows,
                        stats=_file_stats(metadata),
                    )
                )
        except BaseException:
            # A failed task removes its own files; abort() removes the other tasks' files.
            for (target_name, _), (writer, path) in writers.items():
                try:
                    writer.close()
                finally:
                    _delete_quietly(fs, f"{root}/{target_name}/{path}")
            raise
        return StageMessage(files=files)

    def _routed(self, batch: pa.RecordBatch, target: str) -> pa.RecordBatch:
        if self.route_column is None:
            return batch
        mask = pc.equal(batch.column(self.route_column), target)
        matching = pc.sum(mask).as_py() or 0
        if matching == batch.num_rows:
            return batch  # the common case: no copy
        return batch.filter(mask) if matching else batch.slice(0, 0)

    def _write_rows(
        self,
        fs: pafs.FileSystem,
        root: str,
        task: str,
        target: _TargetSpec,
        rows: pa.RecordBatch,
        writers: dict[tuple[str, tuple[Any, ...]], tuple[pq.ParquetWriter, str]],
    ) -> None:
        if target.fixed_partition:
            values = tuple(target.constants[c].as_py() for c in target.partition_by)
            parts = [(values, target.table(rows, target.data_columns))]
        else:
            table = target.table(rows, target.columns)
            parts = []
            for combo in table.group_by(target.partition_by).aggregate([]).to_pylist():
                part = table
                for column, value in combo.items():
                    match = (
                        pc.is_null(part.column(column))
                        if value is None
                        else pc.equal(part.column(column), value)
                    )
                    part = part.filter(match)
                values = tuple(combo[c] for c in target.partition_by)
                parts.append((values, part.select(target.data_columns)))
        for values, part in parts:
            key = (target.name, values)
            if key not in writers:
                folders = "".join(
                    f"{quote(c, safe='')}={_folder_value(v)}/"
                    for c, v in zip(target.partition_by, values, strict=True)
                )
                path = f"{folders}part-{task}-{len(writers):05d}.parquet"
                fs.create_dir(f"{root}/{target.name}/{folders}".rstrip("/"), recursive=True)
                sink = fs.open_output_stream(f"{root}/{target.name}/{path}")
                writer = pq.ParquetWriter(
                    sink,
                    target.file_schema,
                    compression="snappy",
                    # Dictionaries pay off for repeated strings; on numbers they cost ~3x the
                    # write time and are dropped by the encoder anyway.
                    use_dictionary=target.dictionary_columns,
                )
                writers[key] = (writer, path)
            writers[key][0].write_table(part)


def _folder_value(value: Any) -> str:
    text = partition_value(value)
    return "__HIVE_DEFAULT_PARTITION__" if text is None else quote(text, safe="")


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(OSError):
        fs.delete_file(path)


class StagingCommitter(StagingWriter):
    """The driver side: list every task's files in the manifest, or remove them on abort."""

    def commit(self, messages: Sequence[WriterCommitMessage | None]) -> None:
        fs, root = pafs.FileSystem.from_uri(self.staging_uri)
        files = [asdict(f) for m in messages if isinstance(m, StageMessage) for f in m.files]
        manifest = {
            "created_ms": int(time.time() * 1000),
            "targets": {
                t.name: {
                    "schema": encode_schema(t.schema),
                    "partition_by": t.partition_by,
                }
                for t in self.targets
            },
            "files": files,
        }
        with fs.open_output_stream(f"{root}/{MANIFEST}") as out:
            out.write(json.dumps(manifest).encode())

    def abort(self, messages: Sequence[WriterCommitMessage | None]) -> None:
        fs, root = pafs.FileSystem.from_uri(self.staging_uri)
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.delete_dir(root)


class StagingDataSource(DataSource):
    """`df.write.format("precompute_staging")`: stage Parquet files for a Delta commit."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def writer(self, schema: StructType, overwrite: bool) -> StagingCommitter:
        return StagingCommitter(dict(self.options), schema)
