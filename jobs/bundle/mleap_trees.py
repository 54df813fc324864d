"""MLeap decision trees (`tree.json`, pre-order) as a Forest: single trees, random forests and
Spark GBTs, with continuous and categorical splits.

MLeap compares doubles: a continuous split sends `x <= threshold` left (NaN right, as NaN
compares false); a categorical split sends a value listed in `categories` left when `isLeft`,
right otherwise (NaN is never listed). A forest's output is the mean of its trees' leaves; a
GBT's is the weighted sum of its regression trees' leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jobs.bundle.format import BundleError, Node
from jobs.bundle.trees import Forest, ForestBuilder, Postprocess


def forest_from_nodes(
    trees: Sequence[Node],
    classes: int,
    num_features: int,
    *,
    weights: Sequence[float] | None = None,
    boosted: bool = False,
    postprocess: Postprocess = "identity",
) -> Forest:
    """Flatten decision-tree nodes into a Forest, checking each node. `classes`: 0 for
    regression trees, else the class count (a binary forest yields the positive class's
    probability, K classes a probability per class)."""
    builder = ForestBuilder()
    for tree in trees:
        if not tree.tree:
            raise BundleError(f"{tree.where}: the tree has no nodes")
        builder.roots.append(builder.size)
        builder.depths.append(_flatten(tree, classes, num_features, builder))
    outputs = classes if classes > 2 else 1
    return builder.build(
        tree_output=np.zeros(len(trees), np.int32),
        tree_weight=np.asarray(weights if weights is not None else [1.0] * len(trees), float),
        base=np.zeros(outputs, np.float64),
        num_features=num_features,
        average=not boosted,
        exact_categories=True,
        postprocess=postprocess,
    )


def _flatten(tree: Node, classes: int, num_features: int, builder: ForestBuilder) -> int:
    assert tree.tree is not None
    nodes = iter(enumerate(tree.tree))
    deepest = 0
    children: dict[int, list[int]] = {}  # split node -> [MLeap's left child, right child]
    swapped: set[int] = set()  # categorical splits whose listed categories go right
    # Pre-order: each internal node is followed by its whole left subtree, then its right one.
    # The stack holds (node index, depth) of internal nodes still waiting for a right child.
    stack: list[tuple[int, int]] = []
    parent: tuple[int, int] | None = None  # (index, depth) of the node whose child comes next
    for position, item in nodes:
        where = f"{tree.where}/tree.json line {position + 1}"
        depth = 0 if parent is None else parent[1] + 1
        kind = item.get("type")
        if kind == "internal":
            index = _split(item.get("split") or {}, num_features, builder, swapped, where)
            stack.append((index, depth))
        elif kind == "leaf":
            index = builder.add_leaf(_leaf_value(item.get("values"), classes, where))
            deepest = max(deepest, depth)
        else:
            raise BundleError(f"{where}: node type {kind!r} is not supported")
        if parent is not None:
            children.setdefault(parent[0], []).append(index)
        if kind == "internal":
            parent = (index, depth)
            continue
        parent = stack.pop() if stack else None
        if parent is None:
            rest = sum(1 for _ in nodes)
            if rest:
                raise BundleError(f"{where}: {rest} lines after the tree is complete")
            break
    if parent is not None or stack:
        raise BundleError(f"{tree.where}/tree.json ends before the tree is complete")
    for node, (left, right) in children.items():
        # Listed categories go to the Forest's left, NaN and the rest to its right.
        if node in swapped:
            left, right = right, left
        builder.link(node, left, right, right)
    return deepest


def _split(
    split: dict[str, Any], num_features: int, builder: ForestBuilder, swapped: set[int], where: str
) -> int:
    column = split.get("featureIndex")
    if not isinstance(column, int) or not 0 <= column < num_features:
        raise BundleError(f"{where}: featureIndex {column!r} is not below {num_features}")
    if split.get("type") == "continuous":
        cut = split.get("threshold")
        if not isinstance(cut, int | float) or np.isnan(cut):
            raise BundleError(f"{where}: threshold {cut!r} is not a number")
        return builder.add_split(column, float(cut), None)
    if split.get("type") == "categorical":
        listed = split.get("categories")
        if not isinstance(listed, list) or not all(
            isinstance(c, int | float) and c >= 0 and float(c).is_integer() and c < 2**31
            for c in listed
        ):
            raise BundleError(f"{where}: categories {listed!r} are not category indices")
        index = builder.add_split(column, 0.0, [int(c) for c in listed])
        if not split.get("isLeft", True):
            swapped.add(index)
        return index
    raise BundleError(f"{where}: split type {split.get('type')!r} is not supported")


def _leaf_value(values: Any, classes: int, where: str) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise BundleError(f"{where}: leaf values {values!r} are not a list of numbers")
    if classes:
        if len(values) != classes:
            raise BundleError(f"{where}: {len(values)} class values for {classes} classes")
        # scikit-learn's predict_proba: the leaf's class weights divided by their sum.
        total = float(sum(values))
        shares = [float(v) / (total if total != 0.0 else 1.0) for v in values]
        return shares[1:] if classes == 2 else shares
    if len(values) != 1:
        raise BundleError(f"{where}: a regression leaf needs one value, found {len(values)}")
    return [float(values[0])]
