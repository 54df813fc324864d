"""Run a checked bundle on Arrow record batches, on the CPU (numpy, numba) or a GPU (CuPy).

    plan = compile_bundle(read_bundle("model.zip"), device="auto", model_version_id=7)
    out = plan.score(batch)  # entity_id, score, label, model_version_id

The score is the positive-class probability for a classifier and the prediction for a regressor;
the label is the predicted class (null for a regressor).
"""

from __future__ import annotations

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
    Impute,
    Index,
    Linear,
    LinearTerms,
    OneHot,
    Program,
    Scale,
    Step,
    Trees,
)
from precompute.names import Device


class ScoringError(BundleError):
    """A batch cannot be scored as given (a missing column, a value the bundle refuses)."""


def output_schema(entity_type: pa.DataType | None = None) -> pa.Schema:
    """What `Plan.score` returns; the entity id keeps the batch's type (string by default)."""
    return pa.schema(
        [
            pa.field("entity_id", entity_type or pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("model_version_id", pa.int64()),
        ]
    )


@dataclass(frozen=True)
class Plan:
    """A compiled bundle bound to a backend: Arrow batch in, Arrow batch out."""

    program: Program
    backend: Backend
    entity_id: str
    classes: tuple[str, str] | None
    model_version_id: int | None
    kernels: dict[int, Callable[[Any], Any]]

    @property
    def task(self) -> str:
        return self.program.task

    @property
    def device(self) -> str:
        return self.backend.name

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
        if self.classes is not None:
            positive = scores > self.program.threshold
            label = pc.take(pa.array(self.classes), pa.array(positive.astype(np.int8)))
        else:
            label = pa.nulls(len(scores), pa.string())
        version = pa.repeat(pa.scalar(self.model_version_id, pa.int64()), len(scores))
        entity_array = entity.combine_chunks() if isinstance(entity, pa.ChunkedArray) else entity
        return pa.RecordBatch.from_arrays(
            [entity_array, pa.array(scores), label, version],
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
            if not step.keep_invalid and bool(((codes < 0) | (codes >= step.size)).any()):
                raise ScoringError(f"{step.source!r} holds an index outside 0..{step.size - 1}")
            out = xp.zeros((codes.shape[0], step.width), dtype=xp.float64)
            slot = codes.astype(xp.int64)
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
        elif isinstance(step, Linear):
            z = env[step.source] @ xp.asarray(step.coefficients) + step.intercept
            return 1.0 / (1.0 + xp.exp(-z)) if step.logistic else z
        elif isinstance(step, LinearTerms):
            return self._linear_terms(step, env, xp)
        elif isinstance(step, Trees):
            # float64: every tree test is exact on doubles (see jobs.bundle.trees).
            return self.kernels[position](env[step.source])
        return None


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
        recorded = bundle.metadata.get("classes") or ["0", "1"]
        if len(recorded) != 2:
            raise BundleError(f"the bundle records classes {recorded}; binary needs two")
        classes = (str(recorded[0]), str(recorded[1]))
    kernels = {
        position: chosen.tree_kernel(step.forest)
        for position, step in enumerate(program.steps)
        if isinstance(step, Trees)
    }
    return Plan(program, chosen, entity, classes, model_version_id, kernels)
