"""Where a bundle scores: the CPU (numpy, numba) or a GPU (CuPy, nvforest when present).

A backend is an array module plus what differs by device: moving Arrow columns in as arrays, and
the kernel that runs a forest. `backend_for` picks one for a device setting.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.bundle.format import BundleError
from jobs.bundle.treelite_forest import to_treelite
from jobs.bundle.trees import Forest, array_kernel, cpu_kernel, finish
from precompute.names import Device

GPU_CHUNK_ROWS = 1_000_000  # rows per whole-array tree pass on a GPU (bounds device memory)


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
        import cupy  # the optional gpu extra: absent on CPU machines

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no driver, no device, a broken install: all mean "no GPU"
        return False


def gpu_backend() -> Backend:
    import cupy  # the optional gpu extra: only a GPU backend needs it

    def trees(forest: Forest) -> Callable[[Any], Any]:
        if importlib.util.find_spec("nvforest") is not None:
            return _nvforest_kernel(forest)
        return array_kernel(forest, cupy, GPU_CHUNK_ROWS)

    return Backend("gpu", cupy, trees)


def _nvforest_kernel(forest: Forest) -> Callable[[Any], Any]:
    """nvForest on the forest's treelite form: the same `<=` tests on doubles, category lists
    and missing-value children as the CPU kernel; leaf sums in double (XGBoost's float32 sums
    can differ from them in the last float32 bits). Post-processing is ours, as on the CPU."""
    import cupy  # the optional gpu extra, as below
    import nvforest  # the optional gpu extra: the faster GPU forest kernel when installed

    model = nvforest.load_from_treelite_model(to_treelite(forest), device="gpu", precision="double")
    # to_treelite declares a K-output forest a classifier with identity outputs, whose
    # predict_proba gives the K margins; a one-output forest is a regressor.
    outputs = model.predict_proba if forest.num_outputs > 1 else model.predict

    def predict(x: Any) -> Any:
        margin = cupy.asarray(outputs(x.astype("float64")))
        return finish(forest, margin.reshape(x.shape[0], forest.num_outputs), cupy)

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
