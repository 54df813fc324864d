"""The compiled CPU tree kernel (numba), kept apart so only CPU tree scoring imports numba."""

from __future__ import annotations

import numba
import numpy as np

BLOCK_ROWS = 64  # rows walked together through one tree, so their memory loads overlap


@numba.njit(nogil=True, cache=True, inline="always")
def _categorical(v, k, left, nan_right, category, offsets, bits, exact):  # type: ignore[no-untyped-def]
    """The child of categorical node k for the value v (see jobs.bundle.trees)."""
    if v != v:
        return left[k] + nan_right[k]
    if v < 0 or v >= 2147483648.0 or (exact and v != np.floor(v)):
        return left[k] + 1
    code = np.int64(v)
    c = category[k]
    word = offsets[c] + (code >> 5)
    if word < offsets[c + 1] and (bits[word] >> np.uint32(code & 31)) & np.uint32(1):
        return left[k]
    return left[k] + 1


@numba.njit(nogil=True, cache=True)
def walk(  # type: ignore[no-untyped-def]
    x,
    roots,
    depths,
    feature,
    threshold,
    left,
    nan_right,
    category,
    offsets,
    bits,
    exact,
    value,
    tree_output,
    tree_weight,
    acc,
    any_categories,
):
    """acc[i, tree_output[t] + j] += tree_weight[t] * value[leaf of row i in tree t, j], tree by
    tree in order, in acc's precision (see jobs.bundle.trees). Without `any_categories` no node
    is categorical, and the walk skips reading each node's category (most boosters)."""
    n = x.shape[0]
    trees = roots.shape[0]
    width = value.shape[1]
    node = np.empty(BLOCK_ROWS, np.int32)
    for start in range(0, n, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n - start)
        for t in range(trees):
            for r in range(rows):
                node[r] = roots[t]
            for _ in range(depths[t]):
                for r in range(rows):
                    k = node[r]
                    v = x[start + r, feature[k]]
                    if any_categories and category[k] >= 0:
                        node[r] = _categorical(
                            v, k, left, nan_right, category, offsets, bits, exact
                        )
                    else:
                        # Branch-free: the right child is left + 1 (jobs.bundle.trees), taken
                        # when v > threshold, or when v is NaN and NaN goes right.
                        go = np.int32(v > threshold[k]) | (np.int32(v != v) & nan_right[k])
                        node[r] = left[k] + go
            column = tree_output[t]
            weight = tree_weight[t]
            if width == 1:  # one output per tree (boosters, binary forests): no inner loop
                for r in range(rows):
                    acc[start + r, column] += value[node[r], 0] * weight
            else:
                for r in range(rows):
                    leaf = node[r]
                    for j in range(width):
                        acc[start + r, column + j] += value[leaf, j] * weight
    return acc
