"""The compiled CPU tree kernel (numba), kept apart so only CPU tree scoring imports numba."""

from __future__ import annotations

import numba
import numpy as np

BLOCK_ROWS = 64  # rows walked together through one tree, so their memory loads overlap


@numba.njit(nogil=True, cache=True)
def walk(x, roots, depths, feature, threshold, left, right, value, out):  # type: ignore[no-untyped-def]
    """out[i] = mean over trees of the leaf row i reaches (see jobs.bundle.trees)."""
    n = x.shape[0]
    trees = roots.shape[0]
    node = np.empty(BLOCK_ROWS, np.int32)
    for start in range(0, n, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n - start)
        for r in range(rows):
            out[start + r] = 0.0
        for t in range(trees):
            for r in range(rows):
                node[r] = roots[t]
            for _ in range(depths[t]):
                for r in range(rows):
                    k = node[r]
                    if x[start + r, feature[k]] <= threshold[k]:
                        node[r] = left[k]
                    else:
                        node[r] = right[k]
            # Added tree by tree, then divided, in scikit-learn's order.
            for r in range(rows):
                out[start + r] += value[node[r]]
        for r in range(rows):
            out[start + r] /= trees
    return out
