"""Decision trees and forests from a bundle, and the kernels that evaluate them.

All trees are flattened into one set of node arrays. A leaf points at itself, so walking a tree
for as many steps as it is deep lands every row on its leaf without a branch per row; that makes
the same layout work for the compiled CPU kernel and for whole-array (GPU) evaluation.

Splits compare in float32, as scikit-learn does: it casts X to float32 and tests
`x <= threshold` with a float64 threshold. Each threshold is stored as the largest float32 not
above it, which gives the same answer for every float32 x with a float32-only comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.bundle.format import BundleError, Node


@dataclass(frozen=True)
class Forest:
    """One or more trees; the output is the mean of the trees' leaf values."""

    roots: np.ndarray  # int32, first node of each tree
    depths: np.ndarray  # int32, steps to reach every leaf of each tree
    feature: np.ndarray  # int32
    threshold: np.ndarray  # float32, see the module docstring
    left: np.ndarray  # int32, global node index; a leaf's own index
    right: np.ndarray  # int32
    value: np.ndarray  # float64: positive-class probability, or the regression value
    num_features: int

    @property
    def num_trees(self) -> int:
        return int(self.roots.size)


def float32_floor(threshold: float) -> np.float32:
    """The largest float32 not above `threshold`."""
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def forest_from_nodes(trees: Sequence[Node], classifier: bool, num_features: int) -> Forest:
    """Flatten decision-tree nodes (pre-order `tree.json`) into a Forest, checking each node."""
    feature: list[int] = []
    threshold: list[np.float32] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    roots, depths = [], []
    for tree in trees:
        if not tree.tree:
            raise BundleError(f"{tree.where}: the tree has no nodes")
        roots.append(len(feature))
        depth = _flatten(tree, classifier, num_features, (feature, threshold, left, right, value))
        depths.append(depth)
    return Forest(
        roots=np.asarray(roots, np.int32),
        depths=np.asarray(depths, np.int32),
        feature=np.asarray(feature, np.int32),
        threshold=np.asarray(threshold, np.float32),
        left=np.asarray(left, np.int32),
        right=np.asarray(right, np.int32),
        value=np.asarray(value, np.float64),
        num_features=num_features,
    )


def _flatten(tree: Node, classifier: bool, num_features: int, out: tuple[list[Any], ...]) -> int:
    feature, threshold, left, right, value = out
    assert tree.tree is not None
    nodes = iter(enumerate(tree.tree))
    deepest = 0
    # Pre-order: each internal node is followed by its whole left subtree, then its right one.
    # The stack holds (node index, depth) of internal nodes still waiting for a right child.
    stack: list[tuple[int, int]] = []
    parent: tuple[int, int, str] | None = None  # (index, depth, which child comes next)
    for position, item in nodes:
        where = f"{tree.where}/tree.json line {position + 1}"
        index = len(feature)
        depth = 0 if parent is None else parent[1] + 1
        if parent is not None:
            (left if parent[2] == "left" else right)[parent[0]] = index
        kind = item.get("type")
        if kind == "internal":
            split = item.get("split") or {}
            if split.get("type") != "continuous":
                raise BundleError(f"{where}: split type {split.get('type')!r} is not supported")
            column = split.get("featureIndex")
            if not isinstance(column, int) or not 0 <= column < num_features:
                raise BundleError(f"{where}: featureIndex {column!r} is not below {num_features}")
            cut = split.get("threshold")
            if not isinstance(cut, int | float) or np.isnan(cut):
                raise BundleError(f"{where}: threshold {cut!r} is not a number")
            feature.append(column)
            threshold.append(float32_floor(float(cut)))
            left.append(-1)
            right.append(-1)
            value.append(0.0)
            stack.append((index, depth))
            parent = (index, depth, "left")
        elif kind == "leaf":
            feature.append(0)
            threshold.append(np.float32(0))
            left.append(index)
            right.append(index)
            value.append(_leaf_value(item.get("values"), classifier, where))
            deepest = max(deepest, depth)
            parent = (*stack.pop()[:2], "right") if stack else None
            if parent is None:
                rest = sum(1 for _ in nodes)
                if rest:
                    raise BundleError(f"{where}: {rest} lines after the tree is complete")
                break
        else:
            raise BundleError(f"{where}: node type {kind!r} is not supported")
    if parent is not None or stack:
        raise BundleError(f"{tree.where}/tree.json ends before the tree is complete")
    return deepest


def _leaf_value(values: Any, classifier: bool, where: str) -> float:
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise BundleError(f"{where}: leaf values {values!r} are not a list of numbers")
    if classifier:
        if len(values) != 2:
            raise BundleError(f"{where}: {len(values)} class values; only binary is supported")
        # scikit-learn's predict_proba: the leaf's class weights divided by their sum.
        total = float(values[0]) + float(values[1])
        return float(values[1]) / (total if total != 0.0 else 1.0)
    if len(values) != 1:
        raise BundleError(f"{where}: a regression leaf needs one value, found {len(values)}")
    return float(values[0])


# ---- CPU: one compiled pass, single-threaded (Spark runs one task per core) ----------------


def cpu_kernel(forest: Forest) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 matrix to the forest's mean output, compiled with numba."""
    from jobs.bundle.walk import walk  # numba compiles on first import; only CPU trees need it

    arrays = (
        forest.roots,
        forest.depths,
        forest.feature,
        forest.threshold,
        forest.left,
        forest.right,
        forest.value,
    )

    def predict(x32: np.ndarray) -> np.ndarray:
        out = np.empty(x32.shape[0], np.float64)
        walk(np.ascontiguousarray(x32, np.float32), *arrays, out)
        return out

    return predict


# ---- Whole-array evaluation: CuPy on a GPU (any array module with numpy's API) -------------


def array_kernel(forest: Forest, xp: Any, chunk_rows: int) -> Callable[[Any], Any]:
    """Evaluate all trees level by level with array operations of the module `xp`."""
    feature, threshold, left, right, value = (
        xp.asarray(a)
        for a in (forest.feature, forest.threshold, forest.left, forest.right, forest.value)
    )
    roots = xp.asarray(forest.roots)
    steps = int(forest.depths.max(initial=0))
    trees = forest.num_trees

    def predict(x32: Any) -> Any:
        out = xp.empty(x32.shape[0], dtype=xp.float64)
        for start in range(0, x32.shape[0], chunk_rows):
            block = x32[start : start + chunk_rows]
            node = xp.broadcast_to(roots, (block.shape[0], trees)).copy()
            for _ in range(steps):
                seen = xp.take_along_axis(block, feature[node], axis=1)
                node = xp.where(seen <= threshold[node], left[node], right[node])
            out[start : start + block.shape[0]] = value[node].sum(axis=1) / trees
        return out

    return predict


def to_treelite(forest: Forest) -> Any:
    """The forest as a treelite model: `<=` splits, mean of leaves, float64 throughout (treelite
    wants one type for both). The float32-floored thresholds widen exactly, so float32 inputs
    widened to float64 take the same branches."""
    # treelite loads scipy (over half a second): only the GPU's nvforest kernel needs it.
    import treelite.model_builder as tmb

    builder = tmb.ModelBuilder(
        threshold_type="float64",
        leaf_output_type="float64",
        metadata=tmb.Metadata(
            num_feature=forest.num_features,
            task_type="kRegressor",
            average_tree_output=True,
            num_target=1,
            num_class=[1],
            leaf_vector_shape=(1, 1),
        ),
        tree_annotation=tmb.TreeAnnotation(
            num_tree=forest.num_trees,
            target_id=[0] * forest.num_trees,
            class_id=[0] * forest.num_trees,
        ),
        postprocessor=tmb.PostProcessorFunc(name="identity"),
        base_scores=[0.0],
    )
    ends = [*forest.roots[1:].tolist(), int(forest.feature.size)]
    for root, end in zip(forest.roots.tolist(), ends, strict=True):
        builder.start_tree()  # type: ignore[no-untyped-call]
        for k in range(root, end):
            builder.start_node(k - root)
            if forest.left[k] == k:
                builder.leaf(float(forest.value[k]))
            else:
                builder.numerical_test(
                    int(forest.feature[k]),
                    float(forest.threshold[k]),
                    default_left=True,
                    opname="<=",
                    left_child_key=int(forest.left[k]) - root,
                    right_child_key=int(forest.right[k]) - root,
                )
            builder.end_node()  # type: ignore[no-untyped-call]
        builder.end_tree()  # type: ignore[no-untyped-call]
    return builder.commit()
