"""The lake engine seam: how jobs read and write Delta tables, whichever library does it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from precompute.errors import PrecomputeError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class LakeError(PrecomputeError):
    """A Delta table cannot be read or written as asked."""


@dataclass(frozen=True)
class Txn:
    """A Delta application transaction: committing the same (app_id, version) twice is a no-op."""

    app_id: str
    version: int = 1


@dataclass(frozen=True)
class Target:
    """One table a write goes to: its columns (in order) and partition columns.

    `sources` maps a table column to the DataFrame column that fills it, where they differ.
    `constants` are columns with one value for the whole write (a batch id, a date): they
    are added where the files are written instead of travelling with every row.
    `json_columns` arrive as JSON text and are stored as the given Arrow type: Spark moves
    nested values to Python slowly, even null ones, so rare nested values travel as text.
    """

    table: str
    columns: Sequence[str]
    partition_by: Sequence[str] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    json_columns: Mapping[str, Any] = field(default_factory=dict)

    def source_columns(self) -> list[str]:
        """The DataFrame columns this target reads (constants excluded)."""
        return [self.sources.get(c, c) for c in self.columns if c not in self.constants]


@dataclass(frozen=True)
class CommitResult:
    """What a commit did: `committed` is False when the transaction was already in the table."""

    table: str
    version: int
    rows: int
    committed: bool


@dataclass
class TableHistoryEntry:
    """One commit of a table, newest first in `LakeEngine.history`."""

    version: int
    timestamp_ms: int
    operation: str
    details: dict[str, Any] = field(default_factory=dict)


class StagedWrite(ABC):
    """Rows written by one Spark pass, routed to targets, not yet visible in any table."""

    _counts: dict[str, int]

    @property
    def counts(self) -> Mapping[str, int]:
        """Rows staged per target name."""
        return self._counts

    @abstractmethod
    def commit(
        self, target: str, txn: Txn, metadata: Mapping[str, str] | None = None
    ) -> CommitResult:
        """Make one target's rows visible in its table in one Delta transaction."""

    @abstractmethod
    def discard(self) -> None:
        """Drop whatever was staged and not committed; safe to call more than once."""


class LakeEngine(ABC):
    """Reads and writes the project's Delta tables from Spark."""

    def __init__(self, lake_uri: str) -> None:
        self.lake_uri = lake_uri.rstrip("/")

    def table_uri(self, table: str) -> str:
        """Where a table (e.g. 'quarantine' or 'incoming/customers') lives."""
        return f"{self.lake_uri}/{table}"

    @abstractmethod
    def exists(self, table: str) -> bool:
        """True when the table has been created."""

    @abstractmethod
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table's snapshot (the latest, or `version` for time travel) as a DataFrame."""

    @abstractmethod
    def stage(
        self, df: DataFrame, targets: Mapping[str, Target], route_column: str | None = None
    ) -> StagedWrite:
        """Write `df` once, each row to the target named by its `route_column`, uncommitted.

        With one target and no route column every row goes to that target.
        """

    def append(
        self,
        df: DataFrame,
        target: Target,
        txn: Txn,
        metadata: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Append `df` to one table in one transaction (a no-op when `txn` is already there)."""
        staged = self.stage(df, {"rows": target})
        try:
            return staged.commit("rows", txn, metadata)
        finally:
            staged.discard()

    @abstractmethod
    def version(self, table: str) -> int:
        """The table's latest version."""

    @abstractmethod
    def committed_version(self, table: str, app_id: str) -> int | None:
        """The latest transaction version committed under `app_id`, None if never."""

    @abstractmethod
    def history(self, table: str, limit: int | None = None) -> list[TableHistoryEntry]:
        """The table's commits, newest first."""

    @abstractmethod
    def optimize(self, table: str) -> dict[str, Any]:
        """Compact small files; returns the engine's figures."""

    @abstractmethod
    def vacuum(self, table: str, retention_hours: int) -> list[str]:
        """Delete files no longer referenced by versions newer than the retention."""
