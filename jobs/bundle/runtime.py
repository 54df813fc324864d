"""Run a checked bundle on Arrow record batches, on the CPU (numpy, numba) or a GPU (CuPy).

    plan = compile_bundle(read_bundle("model.zip"), device="auto", model_version_id=7)
    out = plan.score(batch)  # entity_id, score, label, model_version_id

The score is the positive-class probability for a classifier and the prediction for a regressor;
the label is the predicted class (null for a regressor).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.bundle.format import Bundle, BundleError
from jobs.bundle.program import (
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
    build_program,
)
from jobs.bundle.trees import Forest, array_kernel, cpu_kernel, to_treelite

Device = Literal["auto", "cpu", "gpu"]
GPU_CHUNK_ROWS = 1_000_000  # rows per whole-array tree pass on a GPU (bounds device memory)


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


class Backend:
    """Array module plus the device-specific pieces: moving columns in, and the tree kernel."""

    def __init__(self, name: str, xp: Any, tree_kernel: Callable[[Forest], Callable[[Any], Any]]):
        self.name = name
        self.xp = xp
        self._tree_kernel = tree_kernel

    def numeric(self, column: pa.Array | pa.ChunkedArray, fill: float | None = None) -> Any:
        """float64 values; nulls become `fill`, or NaN without one."""
        values = pc.cast(column, pa.float64())
        if fill is not None:
            values = pc.fill_null(values, fill)  # then the buffer is used without a copy
        return self.xp.asarray(values.to_numpy(zero_copy_only=False))

    def codes(self, column: pa.Array | pa.ChunkedArray, labels: tuple[str, ...]) -> Any:
        """Each string's position in labels as float64 (MLeap's index type); len(labels) if absent.

        Done on the host: Arrow hashes the few labels once, and only numbers cross to a GPU.
        """
        found = pc.index_in(column, value_set=pa.array(labels, pa.string()))
        codes = pc.fill_null(found, len(labels)).to_numpy(zero_copy_only=False)
        return self.xp.asarray(codes.astype(np.float64))

    def tree_kernel(self, forest: Forest) -> Callable[[Any], Any]:
        return self._tree_kernel(forest)

    def host(self, array: Any) -> np.ndarray:
        return array.get() if hasattr(array, "get") else np.asarray(array)


def cpu_backend() -> Backend:
    return Backend("cpu", np, cpu_kernel)


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no driver, no device, a broken install: all mean "no GPU"
        return False


def gpu_backend() -> Backend:
    import cupy

    def trees(forest: Forest) -> Callable[[Any], Any]:
        if importlib.util.find_spec("nvforest") is not None:
            return _nvforest_kernel(forest)
        return array_kernel(forest, cupy, GPU_CHUNK_ROWS)

    return Backend("gpu", cupy, trees)


def _nvforest_kernel(forest: Forest) -> Callable[[Any], Any]:
    import nvforest

    # Double precision compares each float32 value, widened, with its float32 threshold,
    # widened: the same answers as the float32 comparison, with float64 leaf sums.
    model = nvforest.load_from_treelite_model(to_treelite(forest), device="gpu", precision="double")

    def predict(x32: Any) -> Any:
        return model.predict(x32.astype("float64")).reshape(-1)

    return predict


def backend_for(device: Device) -> Backend:
    if device == "cpu":
        return cpu_backend()
    if device == "gpu":
        if not gpu_available():
            raise BundleError(
                "scoring device 'gpu' was asked for, but no CUDA device is visible to CuPy "
                "(install the gpu extra on a GPU machine, or use device 'auto' or 'cpu')"
            )
        return gpu_backend()
    return gpu_backend() if gpu_available() else cpu_backend()


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
            x32 = env[step.source].astype(xp.float32)
            return self.kernels[position](x32)
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
