"""Forests to and from treelite: boosters (XGBoost, LightGBM) in, any Forest out for nvForest.

treelite loads both libraries' models; its JSON dump gives each node's test (`<`, `<=`, ...,
or a category list), the child missing values go to (`default_left`), and the leaf values, plus
each tree's class, the base scores and the post-processor. XGBoost's float32 `x < t` becomes a
float64 `x <= T` that agrees for every double x (XGBoost casts its input to float32 first).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from jobs.bundle.format import BundleError
from jobs.bundle.thresholds import float32_below_as_double
from jobs.bundle.trees import Forest, ForestBuilder, Postprocess

POSTPROCESSORS: dict[str, Postprocess] = {
    "identity": "identity",
    "identity_multiclass": "identity",
    "sigmoid": "sigmoid",
    "softmax": "softmax",
    "exponential": "exponential",
}


def forest_from_treelite(model: Any, where: str, blank_threshold: float | None = None) -> Forest:
    """A treelite model (from `treelite.frontend`) as a Forest; `where` names it in errors.
    treelite's dump leaves a non-finite threshold blank: `blank_threshold` is what the caller
    knows it to be (LightGBM writes `inf` for a split that sends every number left)."""
    dump = _dump(model, where, blank_threshold)
    if dump["num_target"] != 1 or list(dump["leaf_vector_shape"]) != [1, 1]:
        raise BundleError(f"{where}: multi-target trees or vector leaves are not supported")
    post = POSTPROCESSORS.get(dump["postprocessor"])
    if post is None:
        raise BundleError(
            f"{where}: output transform {dump['postprocessor']!r} is not supported "
            f"(supported: {', '.join(POSTPROCESSORS)})"
        )
    float32 = dump["threshold_type"] == "float32"  # XGBoost: float32 inputs and sums
    builder = ForestBuilder()
    for number, tree in enumerate(dump["trees"]):
        builder.roots.append(builder.size)
        builder.depths.append(_tree(tree, float32, builder, f"{where} tree {number}"))
    classes = int(dump["num_class"][0])
    return builder.build(
        tree_output=np.asarray(dump["class_id"], np.int32),
        tree_weight=np.ones(len(dump["trees"]), np.float64),
        base=np.asarray(
            dump["base_scores"][:classes], np.float32 if float32 else np.float64
        ).astype(np.float64),
        num_features=int(dump["num_feature"]),
        average=bool(dump["average_tree_output"]),
        float32_sum=float32,
        postprocess=post,
        sigmoid_alpha=float(dump["sigmoid_alpha"]),
    )


def _dump(model: Any, where: str, blank_threshold: float | None) -> Any:
    """treelite's JSON dump, whose writer leaves a non-finite number blank."""
    text = model.dump_as_json()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if blank_threshold is None:
        fixed = text
    else:
        spelled = json.dumps(blank_threshold)  # Infinity, -Infinity or NaN, as Python reads
        fixed = re.sub(r'("threshold":\s*),', lambda m: f"{m[1]}{spelled},", text)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError as exc:
        near = fixed[max(0, exc.pos - 40) : exc.pos + 20]
        raise BundleError(f"{where}: treelite's dump is not JSON near {near!r}: {exc}") from exc


def _tree(tree: dict[str, Any], float32: bool, builder: ForestBuilder, where: str) -> int:
    nodes = {node["node_id"]: node for node in tree["nodes"]}
    index: dict[int, int] = {}
    deepest = 0
    pending = [(0, 0)]  # (node id, depth), depth-first
    while pending:
        node_id, depth = pending.pop()
        node = nodes[node_id]
        if "leaf_value" in node:
            leaf = node["leaf_value"]
            index[node_id] = builder.add_leaf(list(leaf) if isinstance(leaf, list) else [leaf])
            deepest = max(deepest, depth)
            continue
        if node["node_type"] == "categorical_test_node":
            categories = [int(c) for c in node["category_list"]]
            index[node_id] = builder.add_split(node["split_feature_id"], 0.0, categories)
        elif node["node_type"] == "numerical_test_node":
            index[node_id] = builder.add_split(
                node["split_feature_id"], _threshold(node, float32, where), None
            )
        else:
            raise BundleError(f"{where}: node type {node['node_type']!r} is not supported")
        pending += [(node["right_child"], depth + 1), (node["left_child"], depth + 1)]
    for node_id, node in nodes.items():
        if "leaf_value" in node:
            continue
        left, right = index[node["left_child"]], index[node["right_child"]]
        missing = left if node["default_left"] else right
        if node["node_type"] == "categorical_test_node":
            # The Forest sends listed categories left and the rest right.
            if node["category_list_right_child"]:
                left, right = right, left
        elif node["comparison_op"] in (">", ">="):
            left, right = right, left  # x > t is not (x <= t); x >= t is not (x < t)
        builder.link(index[node_id], left, right, missing)
    return deepest


def _threshold(node: dict[str, Any], float32: bool, where: str) -> float:
    op, cut = node["comparison_op"], float(node["threshold"])
    if op in ("<=", ">"):
        if float32 and np.float32(cut) != cut:
            raise BundleError(f"{where}: float32 threshold {cut!r} is not a float32")
        # float32(x) <= t32 holds exactly when float32(x) < the next float32 above t32.
        above = np.nextafter(np.float32(cut), np.float32(np.inf))
        return float32_below_as_double(above) if float32 else cut
    if op in ("<", ">="):
        if not float32:
            return float(np.nextafter(cut, -np.inf))  # double x < t is x <= the double below t
        return float32_below_as_double(np.float32(cut))
    raise BundleError(f"{where}: comparison {op!r} is not supported")


def to_treelite(forest: Forest) -> Any:
    """The forest as a treelite model with the same tests (`<=` on float64, category lists,
    missing values' child) and leaves, for nvForest."""
    # treelite loads scipy (over half a second): only the GPU's nvforest kernel needs it.
    import treelite.model_builder as tmb

    outputs, width = forest.num_outputs, forest.value.shape[1]
    vector = width > 1  # a K-class forest: one leaf vector over all classes
    builder = tmb.ModelBuilder(
        threshold_type="float64",
        leaf_output_type="float64",
        metadata=tmb.Metadata(
            num_feature=forest.num_features,
            task_type="kMultiClf" if outputs > 1 else "kRegressor",
            average_tree_output=forest.average,
            num_target=1,
            num_class=[outputs],
            leaf_vector_shape=(1, width),
        ),
        tree_annotation=tmb.TreeAnnotation(
            num_tree=forest.num_trees,
            target_id=[0] * forest.num_trees,
            class_id=[-1 if vector else int(c) for c in forest.tree_output],
        ),
        # Post-processing runs in jobs.bundle.trees.finish, the same on every backend.
        postprocessor=tmb.PostProcessorFunc(
            name="identity_multiclass" if outputs > 1 else "identity"
        ),
        base_scores=[float(b) for b in forest.base],
    )
    ends = [*forest.roots[1:].tolist(), int(forest.feature.size)]
    for tree, (root, end) in enumerate(zip(forest.roots.tolist(), ends, strict=True)):
        weight = float(forest.tree_weight[tree])
        builder.start_tree()  # type: ignore[no-untyped-call]
        for k in range(root, end):
            builder.start_node(k - root)
            left, right = int(forest.left[k]), int(forest.right[k])
            if left == k:
                leaf = (forest.value[k] * weight).tolist()
                builder.leaf(leaf if vector else leaf[0])
            elif forest.category[k] >= 0:
                c = int(forest.category[k])
                words = forest.category_bits[
                    forest.category_offsets[c] : forest.category_offsets[c + 1]
                ]
                listed = [
                    i for i in range(32 * words.size) if (int(words[i // 32]) >> (i % 32)) & 1
                ]
                builder.categorical_test(
                    int(forest.feature[k]),
                    listed,
                    default_left=int(forest.missing[k]) == left,
                    category_list_right_child=False,
                    left_child_key=left - root,
                    right_child_key=right - root,
                )
            else:
                builder.numerical_test(
                    int(forest.feature[k]),
                    float(forest.threshold[k]),
                    default_left=int(forest.missing[k]) == left,
                    opname="<=",
                    left_child_key=left - root,
                    right_child_key=right - root,
                )
            builder.end_node()  # type: ignore[no-untyped-call]
        builder.end_tree()  # type: ignore[no-untyped-call]
    return builder.commit()
