"""Feature profiles: what a batch's (or a model's training data's) columns look like.

Per feature: the rows profiled, the missing ones, and by type
- numbers (long, double): min, max, mean, population standard deviation (ddof=0), the
  quantiles at QUANTILES and, given bin edges (the training data's deciles), the count per bin;
- strings and booleans: the most frequent values with their counts (every allowed value of a
  contract's list, counted exactly, or the TOP_VALUES most frequent) and the share of values
  outside the contract's `allowed` list;
- timestamps and dates: the first and last value.

A batch is profiled by Spark aggregates that ride along the ingest's own pass
(`profile_aggregates`, read back by `batch_profile`): no second read of the batch. Its
quantiles come from `percentile_approx` with accuracy QUANTILE_ACCURACY (a quantile's rank is
off by at most 1/QUANTILE_ACCURACY of the rows), and top values of an open string column from
`approx_top_k` (exact while the column has fewer than about 0.75 * TRACKED_ITEMS distinct
values). Training data is profiled exactly, with numpy (`training_profile`), and fixes the bin
edges later batches are counted on, so the PSI of a feature compares like with like.
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

QUANTILES = (0.01, *(round(0.05 * i, 2) for i in range(1, 20)), 0.99)
QUANTILE_ACCURACY = 10_000
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


def bin_index(value: SparkColumn, edges: Sequence[float]) -> SparkColumn:
    """The bin of `value`: how many edges lie below it, as np.searchsorted(side="left")."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    return sum(((value > F.lit(float(e))).cast("int") for e in edges), F.lit(0))


def profile_aggregates(
    contract: Contract, profiled: SparkColumn, edges: Mapping[str, Sequence[float]]
) -> list[SparkColumn]:
    """Aggregates over validated rows that profile those where `profiled` holds, aliased
    `_p<i>_<figure>` by column position; `edges` are the bins to count numbers on, by feature."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    out = [F.count(F.when(profiled, 1)).alias("_p_rows")]
    for i, column in enumerate(profiled_columns(contract)):
        raw = F.col(column.name)
        value = F.when(profiled, raw)
        name = f"_p{i}_"
        out.append(F.count(F.when(profiled & raw.isNull(), 1)).alias(name + "missing"))
        if column.type in NUMERIC:
            number = value.cast("double")
            out += [
                F.min(number).alias(name + "min"),
                F.max(number).alias(name + "max"),
                F.avg(number).alias(name + "mean"),
                F.stddev_pop(number).alias(name + "std"),
                F.percentile_approx(number, list(QUANTILES), QUANTILE_ACCURACY).alias(
                    name + "quantiles"
                ),
            ]
            if column.name in edges:
                b = bin_index(number, edges[column.name])
                out += [
                    F.count(F.when(number.isNotNull() & (b == k), 1)).alias(f"{name}bin{k}")
                    for k in range(len(edges[column.name]) + 1)
                ]
        elif column.type == "boolean":
            out += [
                F.count(F.when(value, 1)).alias(name + "true"),
                F.count(F.when(~value, 1)).alias(name + "false"),
            ]
        elif column.type == "string" and column.allowed is not None:
            out += [
                F.count(F.when(value == F.lit(v), 1)).alias(f"{name}v{k}")
                for k, v in enumerate(column.allowed)
            ]
            # Over every row read, quarantined ones included: an accepted row is never outside.
            out += [
                F.count(raw).alias(name + "present"),
                F.count(F.when(~raw.isin(list(column.allowed)), 1)).alias(name + "outside"),
            ]
        elif column.type == "string":
            out.append(_top_k(value).alias(name + "top"))
        else:  # timestamp, date
            out += [F.min(value).alias(name + "first"), F.max(value).alias(name + "last")]
    return out


def _top_k(value: SparkColumn) -> SparkColumn:
    """approx_top_k over a column expression (the function has no Python wrapper)."""
    from pyspark.sql import functions as F  # pyspark is heavy: loaded when a job profiles

    return F.call_function("approx_top_k", value, F.lit(TOP_VALUES), F.lit(TRACKED_ITEMS))


def batch_profile(
    contract: Contract, figures: Mapping[str, Any], edges: Mapping[str, Sequence[float]]
) -> list[FeatureProfile]:
    """The profiles `profile_aggregates` computed, read from their figures."""
    rows = int(figures["_p_rows"])
    out = []
    for i, column in enumerate(profiled_columns(contract)):
        name = f"_p{i}_"
        base: dict[str, Any] = {
            "feature": column.name,
            "type": column.type,
            "rows": rows,
            "missing": int(figures[name + "missing"]),
        }
        if column.type in NUMERIC:
            quantiles = figures[name + "quantiles"]
            base |= {
                "minimum": _float(figures[name + "min"]),
                "maximum": _float(figures[name + "max"]),
                "mean": _float(figures[name + "mean"]),
                "std": _float(figures[name + "std"]),
                "quantiles": (
                    {quantile_name(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)}
                    if quantiles
                    else None
                ),
            }
            if column.name in edges:
                base["bins"] = {
                    "edges": [float(e) for e in edges[column.name]],
                    "counts": [
                        int(figures[f"{name}bin{k}"]) for k in range(len(edges[column.name]) + 1)
                    ],
                }
        elif column.type == "boolean":
            base["top_values"] = _ranked(
                {"true": int(figures[name + "true"]), "false": int(figures[name + "false"])}
            )
        elif column.type == "string" and column.allowed is not None:
            base["top_values"] = _ranked(
                {v: int(figures[f"{name}v{k}"]) for k, v in enumerate(column.allowed)}
            )
            present = int(figures[name + "present"])
            base["outside_share"] = int(figures[name + "outside"]) / present if present else 0.0
        elif column.type == "string":
            base["top_values"] = _ranked(
                {str(r["item"]): int(r["count"]) for r in figures[name + "top"] or []}
            )
        else:
            base["first"] = _moment(figures[name + "first"])
            base["last"] = _moment(figures[name + "last"])
        out.append(FeatureProfile(**base))
    return out


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
