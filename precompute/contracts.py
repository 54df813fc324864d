"""Dataset contracts: what an input batch must look like, declared once and versioned.

A contract lives in the repository as `contracts/<name>/v<version>.toml`. It names the entity id
column, the feature columns with their types and rules, and an optional event timestamp. Ingest
validates every row against it, and a model bundle records the contract it was trained on.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from precompute.errors import PrecomputeError

ColumnType = Literal["string", "long", "double", "boolean", "date", "timestamp"]
NUMERIC = ("long", "double")
# Columns ingest adds to every accepted row; a contract cannot use these names.
RESERVED = ("batch_id", "ingested_at", "ingest_date", "source_file")
NAME = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"  # no leading _: ingest uses those internally


class ContractError(PrecomputeError):
    """A contract file is missing or invalid."""


class DriftThresholds(BaseModel):
    """A column's own drift thresholds, overriding the PRECOMPUTE_DRIFT_* settings: PSI against
    the training data (`warn`, `fail`) and change of the missing share (`missing_*`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn: float | None = Field(None, ge=0)
    fail: float | None = Field(None, ge=0)
    missing_warn: float | None = Field(None, ge=0, le=1)
    missing_fail: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> DriftThresholds:
        for warn, fail in (("warn", "fail"), ("missing_warn", "missing_fail")):
            low, high = getattr(self, warn), getattr(self, fail)
            if low is not None and high is not None and low > high:
                raise ValueError(f"drift.{warn} {low} is above drift.{fail} {high}")
        return self


class Column(BaseModel):
    """One column: its type and the rules every value must meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    max_length: int | None = Field(None, gt=0)
    description: str = ""
    drift: DriftThresholds | None = None

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> Column:
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC:
            raise ValueError(f"{self.name}: min/max apply to long and double columns only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.name}: min {self.min} is above max {self.max}")
        if self.allowed is not None and self.type != "string":
            raise ValueError(f"{self.name}: allowed values apply to string columns only")
        if self.allowed is not None and not self.allowed:
            raise ValueError(f"{self.name}: allowed is empty, so no value could pass")
        if self.max_length is not None and self.type != "string":
            raise ValueError(f"{self.name}: max_length applies to string columns only")
        return self


class Contract(BaseModel):
    """An input dataset: entity id, features and optional event time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    version: int = Field(gt=0)
    description: str = ""
    # How producers encode text files (CSV): a row whose bytes are not valid in it is
    # quarantined, never changed. JSON lines are UTF-8, as JSON requires.
    encoding: str = "utf-8"
    entity_id: Column
    event_time: Column | None = None
    features: tuple[Column, ...] = Field(min_length=1)
    # What a model learns to predict: present in training data only, never in scoring batches.
    label: Column | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> Contract:
        if self.entity_id.type not in ("string", "long"):
            raise ValueError("entity_id must be a string or long column")
        if self.entity_id.nullable:
            raise ValueError("entity_id cannot be nullable: every row needs its key")
        if self.event_time is not None and self.event_time.type != "timestamp":
            raise ValueError("event_time must be a timestamp column")
        if self.label is not None and self.label.type not in (
            "string",
            "long",
            "double",
            "boolean",
        ):
            raise ValueError("label must be a string, long, double or boolean column")
        names = [c.name for c in self.columns]
        if self.label is not None:
            names.append(self.label.name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"columns declared twice: {', '.join(duplicates)}")
        reserved = sorted(set(names) & set(RESERVED))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: reserved for ingest's own columns")
        return self

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every declared column: entity id, features, then event time."""
        extra = (self.event_time,) if self.event_time is not None else ()
        return (self.entity_id, *self.features, *extra)

    @property
    def ref(self) -> str:
        return f"{self.name}/v{self.version}"

    def input_schema(self) -> dict[str, Any]:
        """What a model trained on this contract reads, as recorded in its bundle and registry."""

        def column(c: Column) -> dict[str, Any]:
            return {"name": c.name, "type": c.type, "nullable": c.nullable}

        return {
            "dataset": self.name,
            "version": self.version,
            "entity_id": column(self.entity_id),
            "features": [column(c) for c in self.features],
        }

    def for_training(self) -> Contract:
        """The contract training data must meet: every column, plus a label on every row."""
        if self.label is None:
            raise ContractError(
                f"contract {self.ref} declares no label, so there is nothing to train on: "
                "add a [label] section naming the column to predict"
            )
        label = self.label.model_copy(update={"nullable": False})
        return self.model_copy(update={"features": (*self.features, label), "label": None})


def load_contract(directory: Path, name: str, version: int | None = None) -> Contract:
    """The contract `name` at `version` (the newest when None) from the contracts folder."""
    folder = directory / name
    versions = _versions(folder)
    if not versions:
        available = sorted(p.name for p in directory.glob("*/") if _versions(p)) or ["none"]
        raise ContractError(
            f"no contract named {name!r} in {directory} (available: {', '.join(available)})"
        )
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise ContractError(
            f"contract {name!r} has no version {chosen} in {folder} "
            f"(versions: {', '.join(map(str, sorted(versions)))})"
        )
    return parse_contract(versions[chosen], expected=(name, chosen))


def parse_contract(path: Path, expected: tuple[str, int] | None = None) -> Contract:
    """Read and check one contract file; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text())
        contract = Contract.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"cannot read contract {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'contract'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ContractError(f"invalid contract {path}: {problems}") from exc
    if expected is not None and (contract.name, contract.version) != expected:
        raise ContractError(
            f"{path} declares {contract.ref} but its place says {expected[0]}/v{expected[1]}"
        )
    return contract


def _versions(folder: Path) -> dict[int, Path]:
    found = {}
    for path in folder.glob("v*.toml"):
        match = re.fullmatch(r"v([1-9][0-9]*)\.toml", path.name)
        if match:
            found[int(match.group(1))] = path
    return found
