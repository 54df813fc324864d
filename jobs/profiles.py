"""Feature profiles: what a batch's (or a model's training data's) columns look like.

Per feature: the rows profiled, the missing ones, and by type
- numbers (long, double): min, max, mean, population standard deviation (ddof=0), the
  quantiles at QUANTILES and, given bin edges (the training data's deciles), the count per bin;
- strings and booleans: the most frequent values with their counts (every allowed value of a
  contract's list, counted exactly, or the TOP_VALUES most frequent) and the share of values
  outside the contract's `allowed` list;
- timestamps and dates: the first and last value.

A batch is profiled by aggregates observed on the ingest's own passes: the accepted rows as
incoming is written (`profile_aggregates`), the share outside the allowed list on every row as
the quarantine is written (`outside_aggregates`); `batch_profile` reads them back. No second
read of the batch. Most of the profile is one aggregate of our own (`jvm/profile/`, built by
`make setup`): one call per row for every column, where Spark's aggregates cost a call per
figure per row and made the profile 14% of the ingest.

Count, missing, min, max, mean and std are exact. Quantiles and the counts per training bin come
from a KLL sketch of each number (Apache DataSketches, k = SKETCH_K) fed a uniform random sample
of the accepted rows: all of them up to SKETCH_SAMPLE rows, else each row with probability
SKETCH_SAMPLE / rows (so the sketches cost the same for any batch). A quantile's rank, or a bin
edge's, is off by at most about 0.3% of the rows from the sketch and 0.3% from the sample, with
99% confidence each; exact up to k rows. Top values of an open string column come from
`approx_top_k` (exact below about 0.75 * TRACKED_ITEMS distinct values). Training data is
profiled exactly, with numpy (`training_profile`); its deciles are the bins later batches are
counted on (those of the dataset's newest training profile at ingest), so a feature's PSI
compares like with like.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from precompute.contracts import NUMERIC, Column, Contract

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import SparkSession

QUANTILES = (0.01, *(round(0.05 * i, 2) for i in range(1, 20)), 0.99)
SKETCH_K = 1000  # KLL sketch size: normalised rank error about 2.3 / k^0.97, 0.28% here
# Rows the sketches see at most: a rank's standard error from the sample is at most
# 0.5 / sqrt(SKETCH_SAMPLE) = 0.11% (0.3% at 99%); the sketch updates cost about 30 ns each.
SKETCH_SAMPLE = 200_000
BINS = 10  # training deciles: the bins PSI is measured on
TOP_VALUES = 20
TRACKED_ITEMS = 10_000
CATEGORICAL = ("string", "boolean")


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's profile; which fields are set depends on its type (module docstring)."""

    feature: str
    type: str
    rows: int
    missing: int
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] | None = None
    bins: dict[str, list[float]] | None = None  # {"edges": [...], "counts": [...]}
    top_values: list[dict[str, Any]] | None = None  # [{"value": "basic", "count": 12}, ...]
    outside_share: float | None = None
    first: datetime.datetime | None = None
    last: datetime.datetime | None = None

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


def profiled_columns(contract: Contract) -> list[Column]:
    """The columns a profile covers: the features and the event time, not the entity id."""
    extra = [contract.event_time] if contract.event_time is not None else []
    return [*contract.features, *extra]


def quantile_name(q: float) -> str:
    return f"p{round(q * 100):02d}"


def shift(column: Column, training_means: Mapping[str, float]) -> float:
    """The value a numeric column's sums are taken around: the mean and the standard deviation
    come from the sums of (x - shift) and of its square, which lose precision as the mean
    grows against the spread, so the shift is the best guess of the mean before the pass: the
    training mean, else the middle of the contract's range, else 0."""
    if column.name in training_means:
        return float(training_means[column.name])
    if column.min is not None and column.max is not None:
        return (float(column.min) + float(column.max)) / 2
    return 0.0


def sketch_rate(rows: int) -> float:
    """The share of `rows` accepted rows the sketches take: all of them up to SKETCH_SAMPLE."""
    return min(1.0, SKETCH_SAMPLE / rows) if rows > 0 else 1.0


def profile_aggregates(
    spark: SparkSession,
    contract: Contract,
    edges: Mapping[str, Sequence[float]],
    training_means: Mapping[str, float],
    rows: int,
    seed: int,
) -> list[SparkColumn]:
    """Aggregates that profile the rows they see (observed on the accepted rows as incoming is
    written): the row count `_p_rows`, the profile aggregate `_p_columns` over every profiled
    column but open strings (numbers counted on their `edges`, with sums around `shift`), and
    per open string column (by position i) `_p<i>_top` and, if nullable, `_p<i>_present`.
    `rows`: how many rows will pass (sketch_rate); `seed`: where the sample's random draws
    start."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    summed = [c for c in profiled_columns(contract) if not _open_string(c)]
    out = [
        F.count(F.lit(1)).alias("_p_rows"),
        _profile_aggregate(
            spark,
            summed,
            [shift(c, training_means) if c.type in NUMERIC else 0.0 for c in summed],
            [edges.get(c.name) for c in summed],
            sketch_rate(rows),
            seed,
        ).alias("_p_columns"),
    ]
    for i, column in enumerate(profiled_columns(contract)):
        if _open_string(column):
            value = F.col(column.name)
            top = F.call_function("approx_top_k", value, F.lit(TOP_VALUES), F.lit(TRACKED_ITEMS))
            out.append(top.alias(f"_p{i}_top"))
            if column.nullable:
                out.append(F.count(value).alias(f"_p{i}_present"))
    return out


def outside_aggregates(spark: SparkSession, contract: Contract) -> list[SparkColumn]:
    """Aggregates over every validated row (observed as the quarantine is written): per string
    column with an allowed list, its values and its count of each allowed value, `_p_read` (an
    accepted row is never outside the list, so the accepted rows alone would always say 0)."""
    listed = [c for c in profiled_columns(contract) if c.type == "string" and c.allowed]
    if not listed:
        return []
    aggregate = _profile_aggregate(spark, listed, [0.0] * len(listed), [None] * len(listed), 1, 0)
    return [aggregate.alias("_p_read")]


def _profile_aggregate(
    spark: SparkSession,
    columns: Sequence[Column],
    shifts: Sequence[float],
    edges: Sequence[Sequence[float] | None],
    rate: float,
    seed: int,
) -> SparkColumn:
    """The aggregate of `jvm/profile/ProfileAggregate.java` over `columns` (see there)."""
    from pyspark.sql.classic.column import Column as ClassicColumn  # pyspark is heavy

    jvm = spark.sparkContext._jvm
    assert jvm is not None, "the profile is set up on the driver"
    spec = {
        "columns": [
            {
                "name": c.name,
                "shift": float(s),
                "allowed": list(c.allowed) if c.allowed is not None else None,
                "edges": [float(e) for e in cut] if cut else None,
            }
            for c, s, cut in zip(columns, shifts, edges, strict=True)
        ],
        "quantiles": [float(q) for q in QUANTILES],
        "sketch_k": SKETCH_K,
        "rate": float(rate),
        "seed": seed,
    }
    return ClassicColumn(jvm.precompute.profile.ProfileAggregate.column(json.dumps(spec)))


def _open_string(column: Column) -> bool:
    """A string column without an allowed list: its top values come from `approx_top_k`."""
    return column.type == "string" and column.allowed is None


def batch_profile(
    contract: Contract,
    figures: Mapping[str, Any],
    edges: Mapping[str, Sequence[float]],
    training_means: Mapping[str, float],
) -> list[FeatureProfile]:
    """The profiles the aggregates computed, read from their figures (`profile_aggregates`,
    `outside_aggregates`, made with these `edges` and `training_means`)."""
    rows = int(figures["_p_rows"])
    summed = iter(figures["_p_columns"])
    read = iter(figures.get("_p_read") or ())
    out = []
    for i, column in enumerate(profiled_columns(contract)):
        figured = None if _open_string(column) else next(summed)
        if figured is not None:
            present = int(figured["present"])
        else:
            present = int(figures[f"_p{i}_present"]) if column.nullable else rows
        base: dict[str, Any] = {
            "feature": column.name,
            "type": column.type,
            "rows": rows,
            "missing": rows - present,
        }
        if figured is None:  # an open string column
            top = figures[f"_p{i}_top"] or []
            base["top_values"] = _ranked({str(r["item"]): int(r["count"]) for r in top})
        elif column.type in NUMERIC:
            if present:
                offset = float(figured["sum"]) / present
                variance = float(figured["squares"]) / present - offset**2
                base |= {
                    "minimum": float(figured["low"]),
                    "maximum": float(figured["high"]),
                    "mean": shift(column, training_means) + offset,
                    "std": math.sqrt(max(variance, 0.0)),  # rounding can leave it below 0
                }
            # None when the sample took none of the column's values (a sparse column).
            if figured["quantiles"] is not None:
                base["quantiles"] = {
                    quantile_name(q): float(v)
                    for q, v in zip(QUANTILES, figured["quantiles"], strict=True)
                }
            if figured["ranks"] is not None:
                ranks = np.asarray(figured["ranks"], dtype=np.float64)
                below = np.concatenate(([0.0], ranks, [1.0]))
                counts = np.rint(np.diff(below) * present).astype(np.int64)
                base["bins"] = {
                    "edges": [float(e) for e in edges[column.name]],
                    "counts": counts.tolist(),
                }
        elif column.type == "boolean":
            true = int(figured["counts"][0])
            base["top_values"] = _ranked({"true": true, "false": present - true})
        elif column.type == "string":
            counts = figured["counts"]
            base["top_values"] = _ranked(
                {v: int(counts[k]) for k, v in enumerate(column.allowed or ())}
            )
            every = next(read, None)  # the quarantine pass's figures, over every row
            seen = int(every["present"]) if every else 0
            outside = seen - sum(int(n) for n in every["counts"]) if every else 0
            base["outside_share"] = outside / seen if seen else 0.0
        else:
            base["first"] = _held_moment(column.type, figured["first"])
            base["last"] = _held_moment(column.type, figured["last"])
        out.append(FeatureProfile(**base))
    return out


def _held_moment(kind: str, value: int | None) -> datetime.datetime | None:
    """A date or timestamp as Spark holds it (days, microseconds since the epoch), in UTC."""
    if value is None:
        return None
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    if kind == "date":
        return epoch + datetime.timedelta(days=value)
    return epoch + datetime.timedelta(microseconds=value)


def training_profile(table: pa.Table, contract: Contract) -> list[FeatureProfile]:
    """The exact profile of training rows (an Arrow table holding the contract's features),
    with decile bin edges for every numeric feature."""
    out = []
    for column in contract.features:
        data = table.column(column.name)
        rows, missing = len(data), data.null_count
        base: dict[str, Any] = {
            "feature": column.name,
            "type": column.type,
            "rows": rows,
            "missing": missing,
        }
        present = data.drop_null()
        if column.type in NUMERIC:
            values = np.asarray(present.to_numpy(), dtype=np.float64)
            if values.size:
                edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
                counts = np.bincount(
                    np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1
                )
                base |= {
                    "minimum": float(values.min()),
                    "maximum": float(values.max()),
                    "mean": float(values.mean()),
                    "std": float(values.std()),
                    "quantiles": {
                        quantile_name(q): float(np.quantile(values, q)) for q in QUANTILES
                    },
                    "bins": {"edges": edges.tolist(), "counts": counts.tolist()},
                }
        elif column.type in CATEGORICAL:
            texts = [str(v).lower() if isinstance(v, bool) else v for v in present.to_pylist()]
            names, counts = np.unique(np.asarray(texts, dtype=object), return_counts=True)
            counted = dict(zip(names.tolist(), counts.tolist(), strict=True))
            if column.allowed is not None:
                outside = sum(n for v, n in counted.items() if v not in column.allowed)
                base["outside_share"] = outside / len(texts) if texts else 0.0
                counted = {v: counted.get(v, 0) for v in column.allowed}
            base["top_values"] = _ranked(counted)
        else:
            values = present.to_pylist()
            base["first"] = _moment(min(values)) if values else None
            base["last"] = _moment(max(values)) if values else None
        out.append(FeatureProfile(**base))
    return out


def _ranked(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """The TOP_VALUES most frequent values, most frequent first (ties by value)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]
    return [{"value": v, "count": n} for v, n in ranked]


def _moment(value: Any) -> datetime.datetime | None:
    """A timestamp or date as an aware UTC datetime (Spark hands back naive local time)."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        return datetime.datetime.combine(value, datetime.time(), datetime.UTC)
    return value.astimezone(datetime.UTC)
