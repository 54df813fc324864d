"""Feature profiles: what a batch's (or a model's training data's) columns look like.

Per feature: the rows profiled, the missing ones, and by type
- numbers (long, double): min, max, mean, population standard deviation (ddof=0), the
  quantiles at QUANTILES and, given bin edges (the training data's deciles), the count per bin;
- strings and booleans: the most frequent values with their counts (every allowed value of a
  contract's list, counted exactly, or the TOP_VALUES most frequent) and the share of values
  outside the contract's `allowed` list;
- timestamps and dates: the first and last value.

A batch is profiled by Spark aggregates observed on the ingest's own passes: the accepted rows
as incoming is written (`profile_aggregates`), the share outside the allowed list on every row
as the quarantine is written (`outside_aggregates`); `batch_profile` reads them back. No second
read of the batch. Count, missing, min, max, mean and std are exact. Quantiles and the counts
per training bin come from a KLL sketch of each number (Apache DataSketches, k = SKETCH_K: a
quantile's rank, or a bin edge's, is off by at most about 0.3% of the rows, with 99%
confidence; exact up to k rows), and top values of an open string column from `approx_top_k`
(exact below about 0.75 * TRACKED_ITEMS distinct values). Training data is profiled exactly,
with numpy (`training_profile`); its deciles are the bins later batches are counted on (those
of the dataset's newest training profile at ingest), so a feature's PSI compares like with
like.
"""

from __future__ import annotations

import datetime
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
BINS = 10  # training deciles: the bins PSI is measured on
TOP_VALUES = 20
TRACKED_ITEMS = 10_000
CATEGORICAL = ("string", "boolean")
TEMPORAL = ("timestamp", "date")


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


def profile_aggregates(contract: Contract) -> list[SparkColumn]:
    """Aggregates that profile the rows they see (observed on the accepted rows as incoming is
    written), aliased `_p<i>_<figure>` by column position."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    out = [F.count(F.lit(1)).alias("_p_rows")]
    for i, column in enumerate(profiled_columns(contract)):
        value = F.col(column.name)
        name = f"_p{i}_"
        # Each aggregate costs per row (about 1% of the ingest each, measured), so none is
        # spent on a figure known otherwise: accepted rows of a required column have a value,
        # and the sketch keeps the exact min and max.
        if column.nullable:
            out.append(F.count(value).alias(name + "present"))
        if column.type in NUMERIC:
            number = value.cast("double")
            out += [
                F.sum(number).alias(name + "sum"),
                F.stddev_pop(number).alias(name + "std"),
                F.kll_sketch_agg_double(number, SKETCH_K).alias(name + "sketch"),
            ]
        elif column.type == "boolean":
            out.append(F.count_if(value).alias(name + "true"))
        elif column.type == "string" and column.allowed is not None:
            out += [
                F.count_if(value == F.lit(v)).alias(f"{name}v{k}")
                for k, v in enumerate(column.allowed)
            ]
        elif column.type == "string":
            top = F.call_function("approx_top_k", value, F.lit(TOP_VALUES), F.lit(TRACKED_ITEMS))
            out.append(top.alias(name + "top"))
        else:  # timestamp, date
            out += [F.min(value).alias(name + "first"), F.max(value).alias(name + "last")]
    return out


def outside_aggregates(contract: Contract) -> list[SparkColumn]:
    """Aggregates over every validated row (observed as the quarantine is written): per string
    column with an allowed list, the values present and those outside the list (an accepted
    row is never outside, so the accepted rows alone would always say 0)."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    out = []
    for i, column in enumerate(profiled_columns(contract)):
        if column.type == "string" and column.allowed is not None:
            raw = F.col(column.name)
            out += [
                F.count(raw).alias(f"_p{i}_read"),
                F.count_if(~raw.isin(list(column.allowed))).alias(f"_p{i}_outside"),
            ]
    return out


def batch_profile(
    spark: SparkSession,
    contract: Contract,
    figures: Mapping[str, Any],
    edges: Mapping[str, Sequence[float]],
) -> list[FeatureProfile]:
    """The profiles the aggregates computed, read from their figures; numbers get their
    quantiles, and their counts per bin of `edges`, from their sketches."""
    rows = int(figures["_p_rows"])
    read = _sketch_readings(spark, contract, figures, edges)
    out = []
    for i, column in enumerate(profiled_columns(contract)):
        name = f"_p{i}_"
        present = int(figures[name + "present"]) if column.nullable else rows
        base: dict[str, Any] = {
            "feature": column.name,
            "type": column.type,
            "rows": rows,
            "missing": rows - present,
        }
        if column.type in NUMERIC:
            base |= {
                "mean": float(figures[name + "sum"]) / present if present else None,
                "std": _float(figures[name + "std"]),
            }
            quantiles, ranks = read.get(column.name, (None, None))
            if quantiles is not None:
                low, *inner, high = quantiles
                base["minimum"], base["maximum"] = float(low), float(high)
                base["quantiles"] = {
                    quantile_name(q): float(v) for q, v in zip(QUANTILES, inner, strict=True)
                }
            if ranks is not None:
                below = np.concatenate(([0.0], np.asarray(ranks, dtype=np.float64), [1.0]))
                counts = np.rint(np.diff(below) * present).astype(np.int64)
                base["bins"] = {
                    "edges": [float(e) for e in edges[column.name]],
                    "counts": counts.tolist(),
                }
        elif column.type == "boolean":
            true = int(figures[name + "true"])
            base["top_values"] = _ranked({"true": true, "false": present - true})
        elif column.type == "string" and column.allowed is not None:
            base["top_values"] = _ranked(
                {v: int(figures[f"{name}v{k}"]) for k, v in enumerate(column.allowed)}
            )
            seen = int(figures.get(name + "read") or 0)
            base["outside_share"] = int(figures.get(name + "outside") or 0) / seen if seen else 0.0
        elif column.type == "string":
            base["top_values"] = _ranked(
                {str(r["item"]): int(r["count"]) for r in figures[name + "top"] or []}
            )
        else:
            base["first"] = _moment(figures[name + "first"])
            base["last"] = _moment(figures[name + "last"])
        out.append(FeatureProfile(**base))
    return out


def _sketch_readings(
    spark: SparkSession,
    contract: Contract,
    figures: Mapping[str, Any],
    edges: Mapping[str, Sequence[float]],
) -> dict[str, tuple[list[float] | None, list[float] | None]]:
    """Per numeric column with values: its quantiles and its ranks at its edges (the share of
    values at or below each), read off its sketch in one small query on the driver."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    sketches = {
        column.name: figures[f"_p{i}_sketch"]
        for i, column in enumerate(profiled_columns(contract))
        if column.type in NUMERIC
        and figures["_p_rows"]
        and (not column.nullable or figures[f"_p{i}_present"])
    }
    if not sketches:
        return {}
    names = list(sketches)
    one = spark.createDataFrame(
        [tuple(bytes(sketches[n]) for n in names)],
        ", ".join(f"s{k} binary" for k in range(len(names))),
    )
    # Ranks 0 and 1 are the exact min and max the sketch keeps.
    wanted = F.array(*[F.lit(q) for q in (0.0, *QUANTILES, 1.0)])
    selected = []
    for k, n in enumerate(names):
        selected.append(F.kll_sketch_get_quantile_double(f"s{k}", wanted))
        cut = [float(e) for e in edges.get(n, [])]
        rank = F.kll_sketch_get_rank_double(f"s{k}", F.array(*[F.lit(e) for e in cut]))
        selected.append(rank if cut else F.lit(None))
    values = one.select(*selected).first()
    assert values is not None
    return {
        n: (list(values[2 * k]), list(values[2 * k + 1]) if n in edges else None)
        for k, n in enumerate(names)
    }


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


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _moment(value: Any) -> datetime.datetime | None:
    """A timestamp or date as an aware UTC datetime (Spark hands back naive local time)."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        return datetime.datetime.combine(value, datetime.time(), datetime.UTC)
    return value.astimezone(datetime.UTC)
