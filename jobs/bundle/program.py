"""Check a bundle against what the runtime supports and turn it into a list of array steps.

Everything a run needs is decided here, when a bundle is registered or loaded: an op or
attribute the runtime does not know, a size that does not line up, or a tree that does not
parse is refused with its node's name before any row is scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs.bundle.boosters import BOOSTER_OPS, booster_facts, forest_from_booster
from jobs.bundle.folding import fold_linear
from jobs.bundle.format import Bundle, BundleError, Node
from jobs.bundle.mleap_trees import forest_from_nodes
from jobs.bundle.steps import (
    Assemble,
    Impute,
    Index,
    Input,
    Kind,
    Linear,
    OneHot,
    Program,
    Scale,
    Step,
    Task,
    Trees,
)
from jobs.bundle.trees import Forest

# Attributes each op may carry; anything else is refused rather than silently ignored.
ATTRIBUTES: dict[str, frozenset[str]] = {
    "imputer": frozenset({"strategy", "surrogate_value", "missing_value", "nullable_input"}),
    "vector_assembler": frozenset({"input_shapes"}),
    "standard_scaler": frozenset({"mean", "std"}),
    "string_indexer": frozenset({"labels", "handle_invalid", "nullable_input"}),
    "one_hot_encoder": frozenset({"size", "drop_last", "handle_invalid"}),
    "logistic_regression": frozenset({"coefficients", "intercept", "num_classes", "threshold"}),
    "linear_regression": frozenset({"coefficients", "intercept"}),
    "decision_tree_classifier": frozenset({"num_features", "num_classes"}),
    "decision_tree_regression": frozenset({"num_features"}),
    "random_forest_classifier": frozenset({"num_features", "num_classes", "tree_weights", "trees"}),
    "random_forest_regression": frozenset({"num_features", "tree_weights", "trees"}),
    "gbt_classifier": frozenset({"num_features", "num_classes", "tree_weights", "trees"}),
    "gbt_regression": frozenset({"num_features", "tree_weights", "trees"}),
    **{op: frozenset({"num_features", "num_classes", "tree_limit"}) for op in BOOSTER_OPS},
}
MODEL_OPS = frozenset(
    {
        "logistic_regression",
        "linear_regression",
        "decision_tree_classifier",
        "decision_tree_regression",
        "random_forest_classifier",
        "random_forest_regression",
        "gbt_classifier",
        "gbt_regression",
        *BOOSTER_OPS,
    }
)
# What a classifier booster's objective must be for its output to be class probabilities.
BOOSTER_CLASSIFIERS = frozenset({"binary:logistic", "multi:softprob", "binary", "multiclass"})
SUPPORTED_OPS = tuple(ATTRIBUTES)


def build_program(bundle: Bundle, *, fold: bool = True) -> Program:
    """Check every node of the bundle and lower it to array steps (no device involved).
    `fold=False` keeps a linear model's steps as written (for comparing the two)."""
    kinds: dict[str, tuple[Kind, int]] = {}  # column -> (kind, width)
    inputs: dict[str, Kind] = {}
    readers: dict[str, set[str]] = {}  # input column -> ops that read it
    steps: list[Step] = []
    model: Node | None = None
    for node in bundle.nodes:
        _check_attributes(node)
        if model is not None:
            raise BundleError(
                f"node {node.name!r} ({node.op}) comes after the model {model.name!r}; "
                "the model must be the last node"
            )

        def read(index: int, want: tuple[Kind, ...], node: Node = node) -> tuple[str, Kind, int]:
            if index >= len(node.inputs):
                raise BundleError(f"node {node.name!r} ({node.op}) has no input {index}")
            name = node.inputs[index].name
            if name not in kinds:
                kind: Kind = "string" if "string" in want else "numeric"
                inputs[name] = kind
                kinds[name] = (kind, 1)
            readers.setdefault(name, set()).add(node.op)
            kind, width = kinds[name]
            if kind not in want:
                raise BundleError(
                    f"node {node.name!r} ({node.op}) reads {name!r} as {'/'.join(want)}, "
                    f"but it is {kind}"
                )
            return name, kind, width

        def write(kind: Kind, width: int, node: Node = node) -> str:
            if not node.outputs:
                raise BundleError(f"node {node.name!r} ({node.op}) declares no output")
            name = node.outputs[0].name
            if name in kinds:
                raise BundleError(f"node {node.name!r} writes {name!r}, which already exists")
            kinds[name] = (kind, width)
            return name

        if node.op in MODEL_OPS:
            model = node
            source, _, width = read(0, ("vector",))
            steps.append(_model_step(node, source, width))
            continue
        steps.append(_transform_step(node, read, write))
    if model is None:
        raise BundleError("the bundle has no model node (" + ", ".join(sorted(MODEL_OPS)) + ")")
    booster = model.op in BOOSTER_OPS
    final = steps[-1]
    assert isinstance(final, Linear | Trees)
    width = kinds[final.source][1]
    if isinstance(final, Linear) and fold:
        folded = fold_linear(steps, kinds)
        steps = [folded] if folded is not None else steps
    task: Task = (
        "classification"
        if model.op.endswith("classifier") or model.op.startswith("logistic")
        else "regression"
    )
    return Program(
        inputs=tuple(
            Input(
                name,
                "string" if kind == "string" else "numeric",
                # Boosters route a missing value (NaN) down each split's default branch.
                nulls_allowed=readers[name]
                <= {"imputer", "string_indexer", *(("vector_assembler",) if booster else ())}
                and not any(
                    isinstance(s, Index) and s.source == name and not s.keep_invalid for s in steps
                ),
            )
            for name, kind in inputs.items()
        ),
        steps=tuple(steps),
        task=task,
        num_classes=int(model.attributes.get("num_classes", 2)) if task == "classification" else 0,
        model_op=model.op,
        threshold=float(model.attributes.get("threshold", 0.5)),
        num_features=width,
    )


def _check_attributes(node: Node) -> None:
    if node.op not in ATTRIBUTES:
        raise BundleError(
            f"node {node.name!r} uses op {node.op!r}, which the runtime does not support "
            f"(supported: {', '.join(SUPPORTED_OPS)})"
        )
    unknown = sorted(set(node.attributes) - ATTRIBUTES[node.op])
    if unknown:
        raise BundleError(
            f"node {node.name!r} ({node.op}) has attribute(s) {', '.join(unknown)} that the "
            f"runtime does not support (known: {', '.join(sorted(ATTRIBUTES[node.op]))})"
        )


def _need(node: Node, name: str, types: type | tuple[type, ...]) -> Any:
    if name not in node.attributes:
        raise BundleError(f"node {node.name!r} ({node.op}) lacks the attribute {name!r}")
    value = node.attributes[name]
    if not isinstance(value, types):
        raise BundleError(f"node {node.name!r} ({node.op}): attribute {name!r} is {value!r}")
    return value


def _vector(node: Node, name: str, width: int | None) -> np.ndarray:
    value = np.asarray(_need(node, name, (list, np.ndarray)), dtype=np.float64).ravel()
    if width is not None and value.size != width:
        raise BundleError(
            f"node {node.name!r} ({node.op}): {name} has {value.size} values for {width} features"
        )
    if not np.all(np.isfinite(value)):
        raise BundleError(f"node {node.name!r} ({node.op}): {name} holds a non-finite value")
    return value


def _invalid_policy(node: Node) -> bool:
    policy = node.attributes.get("handle_invalid", "error")
    if policy not in ("error", "keep"):
        raise BundleError(
            f"node {node.name!r} ({node.op}): handle_invalid {policy!r} is not supported "
            "('skip' would drop rows, and every row must be scored or rejected)"
        )
    return bool(policy == "keep")


def _transform_step(node: Node, read: Any, write: Any) -> Step:
    op = node.op
    if op == "imputer":
        source, _, _ = read(0, ("numeric",))
        strategy = node.attributes.get("strategy", "mean")
        if strategy not in ("mean", "median"):
            raise BundleError(f"node {node.name!r} (imputer): strategy {strategy!r} unsupported")
        surrogate = float(_need(node, "surrogate_value", (int, float)))
        missing = node.attributes.get("missing_value")
        if missing is not None and not isinstance(missing, int | float):
            raise BundleError(f"node {node.name!r} (imputer): missing_value is {missing!r}")
        keep_missing = None if missing is None or np.isnan(missing) else float(missing)
        return Impute(source, write("numeric", 1), surrogate, keep_missing)
    if op == "vector_assembler":
        sources = []
        total = 0
        for index in range(len(node.inputs)):
            name, _, width = read(index, ("numeric", "vector"))
            sources.append(name)
            total += width
        shapes = node.attributes.get("input_shapes")
        if isinstance(shapes, list) and len(shapes) != len(sources):
            raise BundleError(
                f"node {node.name!r} (vector_assembler): input_shapes lists {len(shapes)} "
                f"inputs but the node has {len(sources)}"
            )
        return Assemble(tuple(sources), write("vector", total))
    if op == "standard_scaler":
        source, _, width = read(0, ("vector",))
        mean = _vector(node, "mean", width) if "mean" in node.attributes else None
        std = _vector(node, "std", width) if "std" in node.attributes else None
        return Scale(source, write("vector", width), mean, std)
    if op == "string_indexer":
        source, _, _ = read(0, ("string",))
        labels = _need(node, "labels", list)
        if not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
            raise BundleError(f"node {node.name!r} (string_indexer): labels must be unique strings")
        return Index(source, write("numeric", 1), tuple(labels), _invalid_policy(node))
    if op == "one_hot_encoder":
        source, _, _ = read(0, ("numeric",))
        size = int(_need(node, "size", int))
        if size < 1:
            raise BundleError(f"node {node.name!r} (one_hot_encoder): size {size} is below 1")
        keep = _invalid_policy(node)
        width = size + (1 if keep else 0) - (1 if node.attributes.get("drop_last", True) else 0)
        return OneHot(source, write("vector", width), size, width, keep)
    raise AssertionError(op)  # _check_attributes admits only the ops handled here


def _model_step(node: Node, source: str, width: int) -> Step:
    op = node.op
    if op == "logistic_regression":
        classes = int(node.attributes.get("num_classes", 2))
        if classes != 2:
            raise BundleError(
                f"node {node.name!r} ({op}): {classes} classes; only binary classification "
                "is supported"
            )
    if op in ("logistic_regression", "linear_regression"):
        coefficients = _vector(node, "coefficients", width)
        intercept = float(_need(node, "intercept", (int, float)))
        return Linear(source, coefficients, intercept, logistic=op == "logistic_regression")
    declared = int(_need(node, "num_features", int))
    if declared != width:
        raise BundleError(
            f"node {node.name!r} ({op}) expects {declared} features but its input "
            f"{source!r} has {width}"
        )
    classifier = op.endswith("classifier")
    classes = int(node.attributes.get("num_classes", 2)) if classifier else 0
    if classifier and classes < 2:
        raise BundleError(f"node {node.name!r} ({op}): num_classes {classes} is below 2")
    if op in BOOSTER_OPS:
        return Trees(source, _booster_forest(node, classes, width))
    if op.startswith("decision_tree"):
        return Trees(source, forest_from_nodes([node], classes, width))
    gbt = op.startswith("gbt")
    if gbt and classifier and classes != 2:
        raise BundleError(f"node {node.name!r} ({op}): {classes} classes; Spark's GBT is binary")
    weights = _need(node, "tree_weights", list)
    names = _need(node, "trees", list)
    if len(weights) != len(names) or not names:
        raise BundleError(f"node {node.name!r} ({op}): {len(names)} trees, {len(weights)} weights")
    if not all(isinstance(w, int | float) and np.isfinite(w) for w in weights):
        raise BundleError(f"node {node.name!r} ({op}): tree weights {weights!r} are not numbers")
    if not gbt and any(w != 1.0 for w in weights):
        raise BundleError(f"node {node.name!r} ({op}): tree weights other than 1 are unsupported")
    trees = []
    # A GBT classifier's trees are regression trees: their weighted sum is the margin.
    want = "decision_tree_classifier" if classifier and not gbt else "decision_tree_regression"
    for name in names:
        tree = node.children.get(name)
        if tree is None or tree.op != want:
            raise BundleError(f"node {node.name!r} ({op}): tree {name!r} is not a {want}")
        _check_attributes(tree)
        if int(tree.attributes.get("num_features", width)) != width:
            raise BundleError(f"{tree.where}: num_features differs from the forest's {width}")
        trees.append(tree)
    if not gbt:
        return Trees(source, forest_from_nodes(trees, classes, width))
    return Trees(
        source,
        forest_from_nodes(
            trees,
            0,
            width,
            weights=[float(w) for w in weights],
            boosted=True,
            postprocess="spark_logistic" if classifier else "identity",
        ),
    )


def _booster_forest(node: Node, classes: int, width: int) -> Forest:
    """An XGBoost or LightGBM node's model file as a Forest, checked against its attributes."""
    kind, classifier = BOOSTER_OPS[node.op]
    where = f"node {node.name!r} ({node.op})"
    if node.model_file is None:
        raise BundleError(f"{where} has no model file")
    if int(node.attributes.get("tree_limit", 0)) != 0:
        raise BundleError(f"{where}: tree_limit other than 0 (all trees) is not supported")
    facts = booster_facts(kind, node.model_file)
    if facts.num_features != width:
        raise BundleError(f"{where}: the model file has {facts.num_features} features, not {width}")
    if classifier != (facts.task == "classification"):
        raise BundleError(
            f"{where}: the model file's objective {facts.objective!r} is {facts.task}"
        )
    if classifier and facts.objective not in BOOSTER_CLASSIFIERS:
        raise BundleError(
            f"{where}: objective {facts.objective!r} does not yield probabilities "
            f"(supported: {', '.join(sorted(BOOSTER_CLASSIFIERS))})"
        )
    if classifier and facts.num_classes != classes:
        raise BundleError(
            f"{where}: num_classes is {classes} but the model file has {facts.num_classes}"
        )
    return forest_from_booster(kind, node.model_file, where)
