"""Decision trees, forests and boosted trees, and the kernels that evaluate them.

One layout serves scikit-learn and Spark trees (from a bundle's `tree.json`), Spark GBTs, and
XGBoost and LightGBM boosters (through treelite, see `jobs.bundle.treelite_forest`). All trees
are flattened into one set of node arrays. A leaf points at itself, so walking a tree for as
many steps as it is deep lands every row on its leaf without a branch per row; that makes the
same layout work for the compiled CPU kernel and for whole-array (GPU) evaluation.

A node sends a row to `left`, `right` or `missing`:
- numeric split: `x <= threshold` goes left, `x > threshold` right, NaN to `missing`. Inputs are
  float64 and thresholds float64, and every library's test is turned into this one exactly: MLeap
  compares doubles with `<=` (so a bundle's thresholds are kept as written; our exporter writes
  ones that make that agree with scikit-learn's float32 test), LightGBM compares doubles with
  `<=`, and XGBoost's float32 `x < t` becomes the largest double that rounds to below t32.
- categorical split (`category` >= 0): a value whose category is in the node's set goes left,
  any other value right, NaN to `missing`. A category is the value truncated to an integer
  (XGBoost, LightGBM); MLeap matches only a value equal to a listed category (`exact_categories`).

Each tree adds its leaf's value (a vector of `value.shape[1]` numbers) times its weight into the
output columns from `tree_output`; outputs start at `base` (or 0 and then the mean is taken,
for averaged forests); `postprocess` turns the margins into what the model predicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

# Whole-array passes hold a few arrays of rows x trees: this bounds their cells per pass.
ARRAY_CELLS = 100_000_000
Postprocess = Literal["identity", "sigmoid", "softmax", "exponential", "spark_logistic"]


@dataclass(frozen=True)
class Forest:
    """Trees in flat node arrays; see the module docstring for how a row walks them."""

    roots: np.ndarray  # int32 (trees,): first node of each tree
    depths: np.ndarray  # int32 (trees,): steps to reach every leaf of each tree
    feature: np.ndarray  # int32 (nodes,)
    threshold: np.ndarray  # float64 (nodes,)
    left: np.ndarray  # int32 (nodes,): global node index; a leaf's own index
    right: np.ndarray  # int32
    missing: np.ndarray  # int32: where NaN goes
    category: np.ndarray  # int32: -1 numeric split, else the node's set in category_offsets
    category_offsets: np.ndarray  # int32 (sets + 1,): each set's words in category_bits
    category_bits: np.ndarray  # uint32: bit c of a set's words is set when category c is in it
    value: np.ndarray  # float64 (nodes, width): a leaf's output vector
    tree_output: np.ndarray  # int32 (trees,): first output column each tree adds into
    tree_weight: np.ndarray  # float64 (trees,)
    base: np.ndarray  # float64 (outputs,): margins start here
    num_features: int
    average: bool = False  # outputs are the mean over trees (forests), else the weighted sum
    float32_sum: bool = False  # sum in float32 in tree order, as XGBoost does
    exact_categories: bool = False  # MLeap: only a value equal to a listed category matches
    postprocess: Postprocess = "identity"
    sigmoid_alpha: float = 1.0  # sigmoid(alpha * margin), LightGBM's sigmoid parameter

    @property
    def num_trees(self) -> int:
        return int(self.roots.size)

    @property
    def num_outputs(self) -> int:
        return int(self.base.size)

    @property
    def has_categories(self) -> bool:
        return bool(self.category_offsets.size > 1)


def raw_margin(forest: Forest) -> Forest:
    """The same trees without post-processing: kernels then return the margins."""
    return replace(forest, postprocess="identity")


class ForestBuilder:
    """Collects nodes tree by tree into a Forest's arrays."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "missing", "category")
        }
        self.values: list[list[float]] = []
        self.roots: list[int] = []
        self.depths: list[int] = []
        self.offsets: list[int] = [0]
        self.bits: list[int] = []

    @property
    def size(self) -> int:
        return len(self.values)

    def add_split(self, feature: int, threshold: float, categories: list[int] | None) -> int:
        """A split node whose children are set later with `link`; returns its index."""
        category = -1
        if categories is not None:
            words = np.zeros(max(categories, default=-1) // 32 + 1, np.uint32)
            for c in categories:
                words[c // 32] |= np.uint32(1 << (c % 32))
            category = len(self.offsets) - 1
            self.bits.extend(int(w) for w in words)
            self.offsets.append(len(self.bits))
        for key, item in zip(self.columns, (feature, threshold, -1, -1, -1, category), strict=True):
            self.columns[key].append(item)
        self.values.append([])
        return self.size - 1

    def link(self, node: int, left: int, right: int, missing: int) -> None:
        self.columns["left"][node] = left
        self.columns["right"][node] = right
        self.columns["missing"][node] = missing

    def add_leaf(self, values: list[float]) -> int:
        index = self.size
        # An infinite threshold keeps every value but +inf and NaN on the leaf's own index.
        for key, item in zip(self.columns, (0, np.inf, index, index, index, -1), strict=True):
            self.columns[key].append(item)
        self.values.append(values)
        return index

    def _order(self) -> np.ndarray:
        """Nodes tree by tree, breadth first, each split's two children side by side: then the
        right child is `left + 1` and a kernel picks a child without a branch."""
        left, right = self.columns["left"], self.columns["right"]
        order: list[int] = []
        for root in self.roots:
            order.append(root)
            position = len(order) - 1
            while position < len(order):
                k = order[position]
                if left[k] != k:
                    order += [left[k], right[k]]
                position += 1
        return np.asarray(order, np.int64)

    def build(self, **settings: Any) -> Forest:
        width = max((len(v) for v in self.values), default=1)
        value = np.zeros((self.size, width), np.float64)
        for i, row in enumerate(self.values):
            value[i, : len(row)] = row
        order = self._order()
        where = np.empty(self.size, np.int32)
        where[order] = np.arange(self.size, dtype=np.int32)
        c = {key: np.asarray(items)[order] for key, items in self.columns.items()}
        return Forest(
            roots=where[np.asarray(self.roots, np.int64)],
            depths=np.asarray(self.depths, np.int32),
            feature=c["feature"].astype(np.int32),
            threshold=c["threshold"].astype(np.float64),
            left=where[c["left"]],
            right=where[c["right"]],
            missing=where[c["missing"]],
            category=c["category"].astype(np.int32),
            category_offsets=np.asarray(self.offsets, np.int32),
            category_bits=np.asarray(self.bits, np.uint32),
            value=value[order],
            **settings,
        )


def finish(forest: Forest, margin: Any, xp: Any) -> Any:
    """Post-process margins (n, outputs) into predictions: (n,) for one output, else (n, K)."""
    post = forest.postprocess
    if post == "sigmoid":
        margin = 1.0 / (1.0 + xp.exp(-forest.sigmoid_alpha * margin))
    elif post == "spark_logistic":
        # MLeap's GBT classifier: p0 = 1/(1+exp(2m)) from the raw (-m, m), p1 = 1 - p0.
        margin = 1.0 - 1.0 / (1.0 + xp.exp(2.0 * margin))
    elif post == "exponential":
        margin = xp.exp(margin)
    elif post == "softmax":
        shifted = xp.exp(margin - margin.max(axis=1, keepdims=True))
        margin = shifted / shifted.sum(axis=1, keepdims=True)
    return margin[:, 0] if margin.shape[1] == 1 else margin


def _start(forest: Forest, rows: int, xp: Any) -> Any:
    dtype = xp.float32 if forest.float32_sum else xp.float64
    base = xp.asarray(forest.base, dtype=dtype)
    if forest.average:
        return xp.zeros((rows, forest.num_outputs), dtype=dtype)
    return xp.broadcast_to(base, (rows, forest.num_outputs)).copy()


def _end(forest: Forest, acc: Any, xp: Any) -> Any:
    margin = acc.astype(xp.float64)
    if forest.average:
        # Each output is the mean of the trees that write it: all of them for vector leaves,
        # one class's share for a K-class averaged booster (LightGBM's random forest mode).
        width = forest.value.shape[1]
        writes = (forest.tree_output[:, None] + np.arange(width)[None, :]).ravel()
        counts = np.maximum(np.bincount(writes, minlength=margin.shape[1]), 1)
        margin = margin / xp.asarray(counts.astype(np.float64)) + xp.asarray(forest.base)
    return margin


# ---- CPU: one compiled pass, single-threaded (Spark runs one task per core) ----------------


def cpu_kernel(forest: Forest) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float64 matrix to the forest's predictions, compiled with numba."""
    from jobs.bundle.walk import walk  # numba compiles on first import; only CPU trees need it

    splits = forest.left != np.arange(forest.left.size)
    if np.any(forest.right[splits] != forest.left[splits] + 1):
        raise AssertionError("a split's children are not side by side")  # ForestBuilder's order
    nan_right = ((forest.missing == forest.right) & splits).astype(np.int32)
    any_categories = bool(np.any(forest.category >= 0))
    arrays = (
        forest.roots,
        forest.depths,
        forest.feature,
        forest.threshold,
        forest.left,
        nan_right,
        forest.category,
        forest.category_offsets,
        forest.category_bits,
        forest.exact_categories,
        forest.value,
        forest.tree_output,
        forest.tree_weight,
    )

    def predict(x: np.ndarray) -> np.ndarray:
        acc = _start(forest, x.shape[0], np)
        walk(np.ascontiguousarray(x, np.float64), *arrays, acc, any_categories)
        return finish(forest, _end(forest, acc, np), np)  # type: ignore[no-any-return]

    return predict


# ---- Whole-array evaluation: CuPy on a GPU (any array module with numpy's API) -------------


def array_kernel(forest: Forest, xp: Any, chunk_rows: int) -> Callable[[Any], Any]:
    """Evaluate all trees level by level with array operations of the module `xp`."""
    names = ("feature", "threshold", "left", "right", "missing", "category", "value")
    feature, threshold, left, right, missing, category, value = (
        xp.asarray(getattr(forest, name)) for name in names
    )
    offsets = xp.asarray(forest.category_offsets)
    bits = xp.asarray(forest.category_bits)
    weight = xp.asarray(forest.tree_weight)
    roots = xp.asarray(forest.roots)
    steps = int(forest.depths.max(initial=0))
    width = forest.value.shape[1]
    outputs = forest.tree_output.tolist()
    chunk_rows = max(1, min(chunk_rows, ARRAY_CELLS // max(forest.num_trees, 1)))

    def categorical(node: Any, seen: Any) -> Any:
        index = xp.maximum(category[node], 0)
        valid = (seen >= 0) & (seen < 2.0**31)
        if forest.exact_categories:
            valid &= seen == xp.floor(seen)
        code = xp.where(valid, seen, 0).astype(xp.int64)
        word = offsets[index] + (code >> 5)
        inside = valid & (word < offsets[index + 1])
        found = (bits[xp.where(inside, word, 0)] >> (code & 31).astype(xp.uint32)) & 1
        match = inside & (found == 1)
        return xp.where(seen != seen, missing[node], xp.where(match, left[node], right[node]))

    def predict(x: Any) -> Any:
        acc = _start(forest, x.shape[0], xp)
        for start in range(0, x.shape[0], chunk_rows):
            block = x[start : start + chunk_rows]
            node = xp.broadcast_to(roots, (block.shape[0], forest.num_trees)).copy()
            for _ in range(steps):
                seen = xp.take_along_axis(block, feature[node], axis=1)
                cut = threshold[node]
                nxt = xp.where(
                    seen <= cut, left[node], xp.where(seen > cut, right[node], missing[node])
                )
                if forest.has_categories:
                    nxt = xp.where(category[node] >= 0, categorical(node, seen), nxt)
                node = nxt
            leaves = value[node] * weight[None, :, None]  # (rows, trees, width)
            part = acc[start : start + block.shape[0]]
            # Tree by tree, in the accumulator's precision: the libraries' own order.
            for t, column in enumerate(outputs):
                part[:, column : column + width] += leaves[:, t, :].astype(acc.dtype)
        return finish(forest, _end(forest, acc, xp), xp)

    return predict
