"""Delta tables from Spark through delta-rs: no JVM Delta JARs needed.

Writes: executors stage Parquet files (`staging_source`), the driver moves them into the table
and commits them in one Delta transaction carrying the caller's application transaction, so a
rerun is a no-op. Reads: the snapshot's files straight into Spark's Parquet reader, for tables
whose protocol that reader can honour.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, Schema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from jobs.lake.base import (
    CommitResult,
    LakeEngine,
    LakeError,
    StagedWrite,
    TableHistoryEntry,
    Target,
    Txn,
)
from jobs.lake.staging_source import (
    FORMAT,
    MANIFEST,
    StagingDataSource,
    decode_schema,
    encode_extras,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

STAGING = "_staging"
# Reader features Spark's plain Parquet reader honours when given the snapshot's file list.
READABLE_FEATURES = {"timestampNtz"}
STALE_STAGING_HOURS = 24
_REGISTERED: set[int] = set()  # sessions that know the staging data source


class DeltaRsEngine(LakeEngine):
    def __init__(self, spark: SparkSession, lake_uri: str) -> None:
        super().__init__(lake_uri)
        self.spark = spark
        if id(spark) not in _REGISTERED:
            spark.dataSource.register(StagingDataSource)
            _REGISTERED.add(id(spark))

    def _table(self, table: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri(table), version=version)
        except TableNotFoundError as exc:
            raise LakeError(f"no Delta table at {self.table_uri(table)}") from exc
        except Exception as exc:
            if version is not None and "version" in str(exc).lower():
                raise LakeError(
                    f"table {self.table_uri(table)} has no version {version}: {exc}"
                ) from exc
            raise

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(table))

    def read(self, table: str, version: int | None = None) -> DataFrame:
        from pyspark.sql.pandas.types import from_arrow_schema

        dt = self._table(table, version)
        _check_readable(dt)
        arrow = pa.schema(dt.schema().to_arrow())
        schema = from_arrow_schema(arrow)
        files = dt.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        df = (
            self.spark.read.schema(schema).option("basePath", self.table_uri(table)).parquet(*files)
        )
        return df.select(*arrow.names)

    def stage(
        self, df: DataFrame, targets: Mapping[str, Target], route_column: str | None = None
    ) -> DeltaRsStagedWrite:
        if route_column is None and len(targets) != 1:
            raise ValueError("several targets need a route column")
        self._remove_stale_staging()
        staging_uri = f"{self.lake_uri}/{STAGING}/{uuid.uuid4().hex}"
        spec = {
            name: {
                "columns": list(t.columns),
                "sources": {c: t.sources.get(c, c) for c in t.columns if c not in t.constants},
                "partition_by": list(t.partition_by),
            }
            for name, t in targets.items()
        }
        extras = {
            name: {"values": dict(t.constants), "json": dict(t.json_columns)}
            for name, t in targets.items()
        }
        writer = (
            df.write.format(FORMAT)
            .mode("append")
            .option("staging_uri", staging_uri)
            .option("targets", json.dumps(spec))
            .option("extras", encode_extras(extras))
        )
        if route_column is not None:
            writer = writer.option("route_column", route_column)
        try:
            writer.save()
        except BaseException:
            _delete_dir(staging_uri)
            raise
        return DeltaRsStagedWrite(self, staging_uri, dict(targets))

    def _remove_stale_staging(self) -> None:
        """Staging left by a job killed before it could clean up."""
        fs, root = pafs.FileSystem.from_uri(f"{self.lake_uri}/{STAGING}")
        selector = pafs.FileSelector(root, allow_not_found=True)
        cutoff = time.time() - STALE_STAGING_HOURS * 3600
        for info in fs.get_file_info(selector):
            is_dir = info.type == pafs.FileType.Directory
            if is_dir and info.mtime_ns is not None and info.mtime_ns / 1e9 < cutoff:
                fs.delete_dir(info.path)

    def version(self, table: str) -> int:
        return int(self._table(table).version())

    def committed_version(self, table: str, app_id: str) -> int | None:
        if not self.exists(table):
            return None
        version = self._table(table).transaction_version(app_id)
        return None if version is None else int(version)

    def history(self, table: str, limit: int | None = None) -> list[TableHistoryEntry]:
        entries = self._table(table).history(limit)
        return [
            TableHistoryEntry(
                version=int(entry["version"]),
                timestamp_ms=int(entry["timestamp"]),
                operation=str(entry.get("operation", "")),
                details={k: v for k, v in entry.items() if k not in ("version", "timestamp")},
            )
            for entry in entries
        ]

    def optimize(self, table: str) -> dict[str, Any]:
        return dict(self._table(table).optimize.compact())

    def vacuum(self, table: str, retention_hours: int) -> list[str]:
        # The retention is the caller's (a setting); the table's own default of 7 days would
        # refuse anything shorter, including the short retention tests use.
        return list(
            self._table(table).vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
            )
        )


class DeltaRsStagedWrite(StagedWrite):
    def __init__(self, engine: DeltaRsEngine, staging_uri: str, targets: dict[str, Target]):
        self.engine = engine
        self.staging_uri = staging_uri
        self.targets = targets
        fs, root = pafs.FileSystem.from_uri(staging_uri)
        with fs.open_input_stream(f"{root}/{MANIFEST}") as stream:
            self.manifest = json.loads(stream.read())
        self._counts = {name: 0 for name in targets}
        for staged in self.manifest["files"]:
            self._counts[staged["target"]] += staged["num_rows"]

    def commit(
        self, target: str, txn: Txn, metadata: Mapping[str, str] | None = None
    ) -> CommitResult:
        spec = self.targets[target]
        uri = self.engine.table_uri(spec.table)
        existing = self.engine._table(spec.table) if self.engine.exists(spec.table) else None
        rows = self._counts[target]
        if existing is not None:
            done = existing.transaction_version(txn.app_id)
            if done is not None and done >= txn.version:
                return CommitResult(spec.table, int(existing.version()), rows, committed=False)
        schema = decode_schema(self.manifest["targets"][target]["schema"])
        files = [f for f in self.manifest["files"] if f["target"] == target]
        if existing is not None:
            _check_schema(uri, existing, schema, files)
        moved = _move_into_table(self.staging_uri, target, uri, files)
        actions = [
            AddAction(
                f["path"],
                f["size"],
                f["partition_values"],
                int(time.time() * 1000),
                True,
                f["stats"],
            )
            for f in files
        ]
        properties = CommitProperties(
            custom_metadata=dict(metadata or {}),
            app_transactions=[Transaction(txn.app_id, txn.version)],
        )
        try:
            if existing is None:
                create_table_with_add_actions(
                    uri,
                    Schema.from_arrow(schema),
                    actions,
                    mode="append",
                    partition_by=list(spec.partition_by) or None,
                    commit_properties=properties,
                )
            else:
                existing.create_write_transaction(
                    list[AddAction | RemoveAction](actions),
                    mode="append",
                    schema=existing.schema(),
                    partition_by=list(spec.partition_by) or None,
                    commit_properties=properties,
                )
        except BaseException:
            # The commit did not happen: take the files out again so the folder is as it was.
            for path in moved:
                _delete_file(path)
            raise
        return CommitResult(spec.table, int(DeltaTable(uri).version()), rows, committed=True)

    def discard(self) -> None:
        _delete_dir(self.staging_uri)


def _check_readable(dt: DeltaTable) -> None:
    protocol = dt.protocol()
    unsupported = set(protocol.reader_features or []) - READABLE_FEATURES
    mapping = (dt.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if unsupported or protocol.min_reader_version > 3 or mapping not in (None, "none"):
        found = sorted(unsupported) + ([f"columnMapping={mapping}"] if mapping != "none" else [])
        raise LakeError(
            f"Delta table {dt.table_uri} needs reader features this engine cannot honour "
            f"({', '.join(found) or f'reader version {protocol.min_reader_version}'}): read it "
            "with PRECOMPUTE_LAKE_ENGINE=delta-spark, or rewrite it without those features"
        )


def _check_schema(
    uri: str, table: DeltaTable, staged: pa.Schema, files: list[dict[str, Any]]
) -> None:
    """Refuse files whose columns or types differ from the table's (delta-rs does not check)."""
    have = {f.name: f for f in table.schema().fields}
    want = {f.name: f for f in Schema.from_arrow(staged).fields}
    problems = [f"missing column {n!r}" for n in have if n not in want]
    problems += [f"unexpected column {n!r}" for n in want if n not in have]
    problems += [
        f"column {n!r} is {want[n].type} but the table has {have[n].type}"
        for n in have.keys() & want.keys()
        if str(want[n].type) != str(have[n].type)
    ]
    for name, field in have.items():
        if not field.nullable and any(
            json.loads(f["stats"]).get("nullCount", {}).get(name, 0) for f in files
        ):
            problems.append(f"column {name!r} is NOT NULL in the table but has nulls")
    if problems:
        raise LakeError(f"refusing to write to {uri}: " + "; ".join(problems))


def _move_into_table(
    staging_uri: str, target: str, table_uri: str, files: list[dict[str, Any]]
) -> list[str]:
    fs, staging_root = pafs.FileSystem.from_uri(staging_uri)
    _, table_root = pafs.FileSystem.from_uri(table_uri)
    moved = []
    try:
        for f in files:
            destination = f"{table_root}/{f['path']}"
            fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.move(f"{staging_root}/{target}/{f['path']}", destination)
            moved.append(f"{table_uri}/{f['path']}")
    except BaseException:
        for path in moved:
            _delete_file(path)
        raise
    return moved


def _delete_file(uri: str) -> None:
    fs, path = pafs.FileSystem.from_uri(uri)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_file(path)


def _delete_dir(uri: str) -> None:
    fs, path = pafs.FileSystem.from_uri(uri)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_dir(path)
