"""Run a checked bundle on Arrow record batches, on the CPU (numpy, numba) or a GPU (CuPy).

    plan = compile_bundle(read_bundle("model.zip"), device="auto", model_version_id=7)
    out = plan.score(batch)  # entity_id, score, label, model_version_id

The score is the prediction for a regressor, the positive-class probability for a binary
classifier, and the probability of the predicted class for a multiclass one; the label is the
predicted class (null for a regressor). A multiclass classifier also gives every class's
probability, as a map from class to probability in the bundle's class order (null for other
models): the data names its classes, so no reader needs the bundle to make sense of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.bundle.backends import Backend, backend_for
from jobs.bundle.format import Bundle, BundleError
from jobs.bundle.program import build_program
from jobs.bundle.steps import (
    Assemble,
    Binarize,
    Bucketize,
    Impute,
    Index,
    Linear,
    LinearTerms,
    MaxAbs,
    MinMax,
    Multinomial,
    Normalize,
    OneHot,
    Polynomial,
    Program,
    Scale,
    Step,
    Trees,
)
from precompute.names import Device


class ScoringError(BundleError):
    """A batch cannot be scored as given (a missing column, a value the bundle refuses)."""


PROBABILITIES = pa.map_(pa.string(), pa.float64())


def output_schema(entity_type: pa.DataType | None = None) -> pa.Schema:
    """What `Plan.score` returns; the entity id keeps the batch's type (string by default)."""
    return pa.schema(
        [
            pa.field("entity_id", entity_type or pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("model_version_id", pa.int64()),
            pa.field("probabilities", PROBABILITIES),
        ]
    )


@dataclass(frozen=True)
class Plan:
    """A compiled bundle bound to a backend: Arrow batch in, Arrow batch out."""

    program: Program
    backend: Backend
    entity_id: str
    classes: tuple[str, ...] | None
    model_version_id: int | None
    kernels: dict[int, Callable[[Any], Any]]

    @property
    def task(self) -> str:
        return self.program.task

    @property
    def device(self) -> str:
        return self.backend.name

    def values(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The model step's value for each row, on the host: (n,) for a regressor or a binary
        classifier (its positive-class probability), (n, K) class probabilities for K classes."""
        env: dict[str, Any] = {}
        for column in self.program.inputs:
            env[column.name] = self._input(batch, column.name, column.kind, column.nulls_allowed)
        result: Any = None
        for position, step in enumerate(self.program.steps):
            result = self._run(position, step, env, self.backend.xp)
        return self.backend.host(result)

    def score(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        xp = self.backend.xp
        env: dict[str, Any] = {}
        for column in self.program.inputs:
            env[column.name] = self._input(batch, column.name, column.kind, column.nulls_allowed)
        result: Any = None
        for position, step in enumerate(self.program.steps):
            result = self._run(position, step, env, xp)
        scores = self.backend.host(result)
        if not np.all(np.isfinite(scores)):
            raise ScoringError(
                "the model produced a non-finite score: an input holds a value outside what "
                "the bundle handles (check the inputs against the model's contract)"
            )
        entity = self._column(batch, self.entity_id)
        if entity.null_count:
            raise ScoringError(f"entity id column {self.entity_id!r} holds nulls")
        if scores.ndim == 2 and scores.shape[1] == 2:
            # A two-class softmax (multi:softprob with two classes) is a binary model: its
            # score is the second class's probability, as every binary model's is.
            scores = scores[:, 1]
        rows = scores.shape[0]
        probabilities = pa.nulls(rows, PROBABILITIES)
        if self.classes is None:
            label = pa.nulls(rows, pa.string())
        elif scores.ndim == 2:
            predicted = np.argmax(scores, axis=1)  # the first of equal maxima, as Spark and sklearn
            label = pc.take(pa.array(self.classes), pa.array(predicted))
            width = len(self.classes)
            probabilities = pa.MapArray.from_arrays(
                pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32)),
                pa.DictionaryArray.from_arrays(
                    pa.array(np.tile(np.arange(width, dtype=np.int32), rows)),
                    pa.array(self.classes),
                ).cast(pa.string()),
                pa.array(scores.ravel()),
            )
            scores = scores[np.arange(rows), predicted]
        else:
            positive = scores > self.program.threshold
            label = pc.take(pa.array(self.classes), pa.array(positive.astype(np.int8)))
        version = pa.repeat(pa.scalar(self.model_version_id, pa.int64()), rows)
        entity_array = entity.combine_chunks() if isinstance(entity, pa.ChunkedArray) else entity
        return pa.RecordBatch.from_arrays(
            [entity_array, pa.array(scores), label, version, probabilities],
            schema=output_schema(entity_array.type),
        )

    def _column(self, batch: pa.RecordBatch | pa.Table, name: str) -> Any:
        index = batch.schema.get_field_index(name)
        if index < 0:
            raise ScoringError(
                f"the batch has no column {name!r}, which the model reads "
                f"(it reads: {', '.join([self.entity_id, *(c.name for c in self.program.inputs)])})"
            )
        return batch.column(index)

    def _input(self, batch: Any, name: str, kind: str, nulls_allowed: bool) -> Any:
        column = self._column(batch, name)
        if kind == "string":
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise ScoringError(f"column {name!r} is {column.type}; the model wants strings")
            return column
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
            or pa.types.is_decimal(column.type)
        ):
            raise ScoringError(f"column {name!r} is {column.type}; the model wants numbers")
        if not nulls_allowed and (
            column.null_count
            or (pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py())
        ):
            raise ScoringError(
                f"column {name!r} has missing values and the model has no imputer for it"
            )
        return column  # converted where a step reads it (see _array)

    def _array(self, env: dict[str, Any], name: str) -> Any:
        """A column as the backend's float64 array (NaN for nulls), converted once."""
        value = env[name]
        if isinstance(value, pa.Array | pa.ChunkedArray):
            value = env[name] = self.backend.numeric(value)
        return value

    def _linear_terms(self, step: LinearTerms, env: dict[str, Any], xp: Any) -> Any:
        z = None
        for term in step.numeric:
            # Nulls are filled in Arrow, which then hands over its buffer without a copy.
            values = self.backend.numeric(env[term.column], term.surrogate)
            if term.surrogate is not None:
                missing = xp.isnan(values)
                if term.missing_value is not None:
                    missing |= values == term.missing_value
                if bool(missing.any()):
                    values = xp.where(missing, term.surrogate, values)
            z = values * term.weight if z is None else z + values * term.weight
        for category in step.categorical:
            codes = self.backend.codes(env[category.column], category.labels)
            if not category.keep_invalid and bool((codes == len(category.labels)).any()):
                raise ScoringError(
                    f"column {category.column!r} holds a value outside {list(category.labels)} "
                    "and the model's indexer refuses unknown values"
                )
            contribution = xp.asarray(category.weights)[codes.astype(xp.int64)]
            z = contribution if z is None else z + contribution
        assert z is not None
        z = z + step.intercept
        return 1.0 / (1.0 + xp.exp(-z)) if step.logistic else z

    def _run(self, position: int, step: Step, env: dict[str, Any], xp: Any) -> Any:
        if isinstance(step, Impute):
            values = self._array(env, step.source)
            missing = xp.isnan(values)
            if step.missing_value is not None:
                missing |= values == step.missing_value
            env[step.target] = xp.where(missing, step.surrogate, values)
        elif isinstance(step, Index):
            codes = self.backend.codes(env[step.source], step.labels)
            if not step.keep_invalid and bool((codes == len(step.labels)).any()):
                raise ScoringError(
                    f"column {step.source!r} holds a value outside {list(step.labels)} "
                    "and the model's indexer refuses unknown values"
                )
            env[step.target] = codes
        elif isinstance(step, OneHot):
            codes = self._array(env, step.source)
            invalid = ~((codes >= 0) & (codes < step.size))
            if not step.keep_invalid and bool(invalid.any()):
                raise ScoringError(f"{step.source!r} holds an index outside 0..{step.size - 1}")
            if bool((codes != xp.floor(codes))[~invalid].any()):
                raise ScoringError(f"{step.source!r} holds an index that is not a whole number")
            out = xp.zeros((codes.shape[0], step.width), dtype=xp.float64)
            # MLeap puts every invalid index (unknown, negative) in the extra slot `size`.
            slot = xp.where(invalid, step.size, codes).astype(xp.int64)
            inside = (slot >= 0) & (slot < step.width)
            rows = xp.arange(codes.shape[0])
            out[rows[inside], slot[inside]] = 1.0
            env[step.target] = out
        elif isinstance(step, Assemble):
            arrays = [self._array(env, s) for s in step.sources]
            parts = [a if a.ndim == 2 else a[:, None] for a in arrays]
            env[step.target] = xp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        elif isinstance(step, Scale):
            values = self._array(env, step.source)
            if step.mean is not None:
                values = values - xp.asarray(step.mean)
            if step.std is not None:
                std = xp.asarray(step.std)
                # A zero std means a constant feature: Spark's scaler outputs 0 for it.
                values = xp.where(std != 0, values / xp.where(std != 0, std, 1.0), 0.0)
            env[step.target] = values
        elif isinstance(step, MinMax | MaxAbs | Binarize | Normalize):
            env[step.target] = _rescale(step, self._array(env, step.source), xp)
        elif isinstance(step, Polynomial):
            x = self._array(env, step.source)
            out = xp.empty((x.shape[0], len(step.terms)), dtype=xp.float64)
            for k, term in enumerate(step.terms):
                column = xp.ones(x.shape[0], dtype=xp.float64)
                for feature in term:  # Spark's order of multiplication
                    column = column * x[:, feature]
                out[:, k] = column
            env[step.target] = out
        elif isinstance(step, Bucketize):
            env[step.target] = _bucketize(step, self._array(env, step.source), xp)
        elif isinstance(step, Multinomial):
            z = env[step.source] @ xp.asarray(step.coefficients).T + xp.asarray(step.intercepts)
            # MLeap's softmax: shifted by the largest margin only when that is positive, and
            # scaled by the reciprocal of the sum (the same answer to a few ulps either way).
            top = z.max(axis=1, keepdims=True)
            e = xp.exp(z - xp.where(top > 0, top, 0.0))
            return e * (1.0 / e.sum(axis=1, keepdims=True))
        elif isinstance(step, Linear):
            z = env[step.source] @ xp.asarray(step.coefficients) + step.intercept
            return 1.0 / (1.0 + xp.exp(-z)) if step.logistic else z
        elif isinstance(step, LinearTerms):
            return self._linear_terms(step, env, xp)
        elif isinstance(step, Trees):
            # float64: every tree test is exact on doubles (see jobs.bundle.trees).
            return self.kernels[position](env[step.source])
        return None


def _rescale(step: MinMax | MaxAbs | Binarize | Normalize, values: Any, xp: Any) -> Any:
    """The element-wise feature transforms, in MLeap's order of operations."""
    if isinstance(step, MinMax):
        span = xp.asarray(step.span)
        raw = xp.where(
            span != 0, (values - xp.asarray(step.minimum)) / xp.where(span != 0, span, 1.0), 0.5
        )
        return raw * (step.high - step.low) + step.low
    if isinstance(step, MaxAbs):
        scale = xp.asarray(step.max_abs)
        return xp.clip(values / xp.where(scale == 0, 1.0, scale), -1.0, 1.0)
    if isinstance(step, Binarize):
        return (values > step.threshold).astype(xp.float64)
    magnitude = xp.abs(values)
    if step.p == 1:
        norm = magnitude.sum(axis=1)
    elif step.p == 2:
        norm = xp.sqrt((values * values).sum(axis=1))
    elif math.isinf(step.p):
        norm = magnitude.max(axis=1)
    else:
        norm = (magnitude**step.p).sum(axis=1) ** (1.0 / step.p)
    return values / xp.where(norm != 0, norm, 1.0)[:, None]


def _bucketize(step: Bucketize, values: Any, xp: Any) -> Any:
    """Bucket indices as float64; a value outside the splits (or NaN, unless kept) is refused."""
    splits = xp.asarray(step.splits)
    nan = xp.isnan(values)
    outside = ~nan & ((values < splits[0]) | (values > splits[-1]))
    if bool(outside.any()) or (not step.keep_invalid and bool(nan.any())):
        bad = values[outside | (nan & (not step.keep_invalid))][0]
        raise ScoringError(
            f"column {step.source!r} holds {float(bad)}, outside the bucketizer's splits "
            f"[{float(step.splits[0])}, {float(step.splits[-1])}]"
            + ("" if bad == bad else " (NaN is refused: its handle_invalid is 'error')")
        )
    index = xp.searchsorted(splits, values, side="right") - 1
    # The last split closes the last bucket; NaN goes to the extra bucket len(splits) - 1.
    index = xp.where(values == splits[-1], splits.shape[0] - 2, index)
    return xp.where(nan, splits.shape[0] - 1, index).astype(xp.float64)


def compile_bundle(
    bundle: Bundle,
    device: Device = "auto",
    *,
    model_version_id: int | None = None,
    entity_id: str | None = None,
    backend: Backend | None = None,
    fold: bool = True,
) -> Plan:
    """Check the bundle and bind it to a device; refuses anything it could not run."""
    program = build_program(bundle, fold=fold)
    chosen = backend or backend_for(device)
    contract = bundle.metadata.get("input_contract") or {}
    entity = entity_id or (contract.get("entity_id") or {}).get("name")
    if not entity:
        raise BundleError("the bundle records no entity id column: pass entity_id")
    classes = None
    if program.task == "classification":
        # Without recorded names, classes are their indices, as Spark ML labels them.
        recorded = bundle.metadata.get("classes") or [str(k) for k in range(program.num_classes)]
        if len(recorded) != program.num_classes:
            raise BundleError(
                f"the bundle records classes {recorded}, but its model has "
                f"{program.num_classes} classes"
            )
        classes = tuple(str(c) for c in recorded)
    kernels = {
        position: chosen.tree_kernel(step.forest)
        for position, step in enumerate(program.steps)
        if isinstance(step, Trees)
    }
    return Plan(program, chosen, entity, classes, model_version_id, kernels)
