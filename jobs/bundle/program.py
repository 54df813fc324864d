"""Check a bundle against what the runtime supports and turn it into a list of array steps.

Everything a run needs is decided here, when a bundle is registered or loaded: an op or
attribute the runtime does not know, a size that does not line up, or a tree that does not
parse is refused with its node's name before any row is scored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jobs.bundle.boosters import BOOSTER_OPS, booster_facts, forest_from_booster
from jobs.bundle.folding import fold_linear
from jobs.bundle.format import Bundle, BundleError, Node
from jobs.bundle.mleap_trees import forest_from_nodes
from jobs.bundle.steps import (
    Assemble,
    Binarize,
    Bucketize,
    Impute,
    Index,
    Input,
    Kind,
    Linear,
    MaxAbs,
    MinMax,
    Multinomial,
    Normalize,
    OneHot,
    Polynomial,
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
    # Spark 3 writes labels_length and labels_array_0.. (one list per column; see
    # _numbered_attributes); older writers and mleap's scikit-learn side write labels.
    "string_indexer": frozenset({"labels", "labels_length", "handle_invalid", "nullable_input"}),
    # category_sizes: Spark 3's (multi-column) form; size: the single-column form.
    "one_hot_encoder": frozenset({"size", "category_sizes", "drop_last", "handle_invalid"}),
    "min_max_scaler": frozenset({"min", "max", "minValue", "maxValue"}),
    "max_abs_scaler": frozenset({"maxAbs"}),
    "binarizer": frozenset({"threshold", "input_shapes"}),
    "bucketizer": frozenset({"splits", "handle_invalid"}),
    "normalizer": frozenset({"p_norm", "input_size"}),
    "polynomial_expansion": frozenset({"degree", "input_size"}),
    "logistic_regression": frozenset(
        {
            "coefficients",
            "intercept",
            "num_classes",
            "threshold",
            "coefficient_matrix",
            "intercept_vector",
        }
    ),
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
MAX_DEGREE = 6  # a polynomial expansion's width grows as C(features + degree, degree)


def build_program(bundle: Bundle, *, fold: bool = True) -> Program:
    """Check every node of the bundle and lower it to array steps (no device involved).
    `fold=False` keeps a linear model's steps as written (for comparing the two)."""
    kinds: dict[str, tuple[Kind, int]] = {}  # column -> (kind, width)
    inputs: dict[str, Kind] = {}
    readers: dict[str, set[str]] = {}  # input column -> ops that read it
    steps: list[Step] = []
    model: Node | None = None
    for node in bundle.nodes:
        check_attributes(node)
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

        def write(kind: Kind, width: int, index: int = 0, node: Node = node) -> str:
            if index >= len(node.outputs):
                raise BundleError(f"node {node.name!r} ({node.op}) has no output {index}")
            name = node.outputs[index].name
            if name in kinds:
                raise BundleError(f"node {node.name!r} writes {name!r}, which already exists")
            kinds[name] = (kind, width)
            return name

        if node.op in MODEL_OPS:
            model = node
            source, _, width = read(0, ("vector",))
            steps.append(_model_step(node, source, width))
            continue
        steps.extend(_transform_step(node, read, write))
    if model is None:
        raise BundleError("the bundle has no model node (" + ", ".join(sorted(MODEL_OPS)) + ")")
    booster = model.op in BOOSTER_OPS
    final = steps[-1]
    assert isinstance(final, Linear | Multinomial | Trees)
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


def check_attributes(node: Node) -> None:
    if node.op not in ATTRIBUTES:
        raise BundleError(
            f"node {node.name!r} uses op {node.op!r}, which the runtime does not support "
            f"(supported: {', '.join(SUPPORTED_OPS)})"
        )
    unknown = sorted(set(node.attributes) - ATTRIBUTES[node.op] - _numbered_attributes(node))
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


def _numbered_attributes(node: Node) -> set[str]:
    """A multi-column string indexer's labels_array_0 .. labels_array_{labels_length - 1}."""
    count = node.attributes.get("labels_length")
    if node.op != "string_indexer" or not isinstance(count, int) or isinstance(count, bool):
        return set()
    return {f"labels_array_{i}" for i in range(count)}


def _scalar(node: Node, name: str, default: float | None = None) -> float:
    if default is not None and name not in node.attributes:
        return default
    value = float(_need(node, name, (int, float)))
    if not np.isfinite(value):
        raise BundleError(f"node {node.name!r} ({node.op}): {name} is {value}")
    return value


def _columns(node: Node, count: int) -> None:
    """A node that reads `count` columns must write as many, one output per input."""
    if len(node.inputs) != count or len(node.outputs) != count:
        raise BundleError(
            f"node {node.name!r} ({node.op}) has {count} column(s) in its attributes but "
            f"{len(node.inputs)} input(s) and {len(node.outputs)} output(s)"
        )


def _transform_step(node: Node, read: Any, write: Any) -> list[Step]:
    op = node.op
    if op == "imputer":
        source, _, _ = read(0, ("numeric",))
        strategy = node.attributes.get("strategy", "mean")
        # The strategy only says how the surrogate was found: scoring replaces with it alike.
        if strategy not in ("mean", "median", "mode"):
            raise BundleError(f"node {node.name!r} (imputer): strategy {strategy!r} unsupported")
        surrogate = float(_need(node, "surrogate_value", (int, float)))
        missing = node.attributes.get("missing_value")
        if missing is not None and not isinstance(missing, int | float):
            raise BundleError(f"node {node.name!r} (imputer): missing_value is {missing!r}")
        keep_missing = None if missing is None or np.isnan(missing) else float(missing)
        return [Impute(source, write("numeric", 1), surrogate, keep_missing)]
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
        return [Assemble(tuple(sources), write("vector", total))]
    if op == "standard_scaler":
        source, _, width = read(0, ("vector",))
        mean = _vector(node, "mean", width) if "mean" in node.attributes else None
        std = _vector(node, "std", width) if "std" in node.attributes else None
        return [Scale(source, write("vector", width), mean, std)]
    if op == "string_indexer":
        return _string_indexer(node, read, write)
    if op == "one_hot_encoder":
        return _one_hot_encoder(node, read, write)
    if op == "min_max_scaler":
        source, _, width = read(0, ("vector",))
        low, high = _scalar(node, "minValue", 0.0), _scalar(node, "maxValue", 1.0)
        minimum = _vector(node, "min", width)
        span = _vector(node, "max", width) - minimum
        return [MinMax(source, write("vector", width), minimum, span, low, high)]
    if op == "max_abs_scaler":
        source, _, width = read(0, ("vector",))
        return [MaxAbs(source, write("vector", width), _vector(node, "maxAbs", width))]
    if op == "binarizer":
        source, kind, width = read(0, ("numeric", "vector"))
        shape = node.attributes.get("input_shapes")
        base = shape.get("base") if isinstance(shape, dict) else None
        if base not in (None, "scalar" if kind == "numeric" else "tensor"):
            raise BundleError(
                f"node {node.name!r} (binarizer): input_shapes says {base!r} but its input "
                f"{source!r} is {kind}"
            )
        return [Binarize(source, write(kind, width), _scalar(node, "threshold"))]
    if op == "bucketizer":
        source, _, _ = read(0, ("numeric",))
        splits = np.asarray(_need(node, "splits", list), dtype=np.float64)
        if splits.size >= 2:  # MLeap reads NaN (JSON null) at either end as -inf and inf
            splits[0] = -np.inf if np.isnan(splits[0]) else splits[0]
            splits[-1] = np.inf if np.isnan(splits[-1]) else splits[-1]
        if splits.size < 3 or np.isnan(splits).any() or not np.all(np.diff(splits) > 0):
            raise BundleError(
                f"node {node.name!r} (bucketizer): splits must be at least 3 strictly "
                f"increasing values, got {splits.tolist()}"
            )
        keep = _invalid_policy(node)
        return [Bucketize(source, write("numeric", 1), splits, keep)]
    if op == "normalizer":
        source, _, width = read(0, ("vector",))
        p = _scalar(node, "p_norm")
        if p < 1:
            raise BundleError(f"node {node.name!r} (normalizer): p_norm {p} is below 1")
        size = int(_need(node, "input_size", int))
        if size != width:
            raise BundleError(
                f"node {node.name!r} (normalizer): input_size {size}, but its input {source!r} "
                f"has {width} features"
            )
        return [Normalize(source, write("vector", width), p)]
    if op == "polynomial_expansion":
        source, _, width = read(0, ("vector",))
        degree = int(_need(node, "degree", int))
        size = int(_need(node, "input_size", int))
        if size != width or not 1 <= degree <= MAX_DEGREE:
            raise BundleError(
                f"node {node.name!r} (polynomial_expansion): degree {degree} (1..{MAX_DEGREE}) "
                f"and input_size {size} for its input {source!r} of {width} features"
            )
        terms = polynomial_terms(width, degree)
        return [Polynomial(source, write("vector", len(terms)), terms)]
    raise AssertionError(op)  # _check_attributes admits only the ops handled here


def polynomial_terms(features: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """The monomials Spark's PolynomialExpansion writes, in its order: its recursion (expandDense)
    run on feature indices instead of values. Each term lists features as Spark multiplies them."""
    terms: dict[int, tuple[int, ...]] = {}

    def size(count: int, d: int) -> int:
        return math.comb(count + d, d)

    def expand(last: int, d: int, factors: tuple[int, ...], position: int) -> int:
        if d == 0 or last < 0:
            if position >= 0:  # Spark skips the constant 1
                terms[position] = factors
        else:
            start = position
            for power in range(d + 1):
                start = expand(last - 1, d - power, factors + (last,) * power, start)
        return position + size(last + 1, d)

    expand(features - 1, degree, (), -1)
    return tuple(terms[i] for i in range(len(terms)))


def _string_indexer(node: Node, read: Any, write: Any) -> list[Step]:
    if "labels_length" in node.attributes:
        count = int(_need(node, "labels_length", int))
        lists = [_need(node, f"labels_array_{i}", list) for i in range(count)]
    else:
        lists = [_need(node, "labels", list)]
    keep = _invalid_policy(node)
    _columns(node, len(lists))
    steps: list[Step] = []
    for index, labels in enumerate(lists):
        if not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
            raise BundleError(
                f"node {node.name!r} (string_indexer): labels of column {index} must be "
                "unique strings"
            )
        source, _, _ = read(index, ("string",))
        steps.append(Index(source, write("numeric", 1, index), tuple(labels), keep))
    return steps


def _one_hot_encoder(node: Node, read: Any, write: Any) -> list[Step]:
    drop_last = bool(node.attributes.get("drop_last", True))
    if "category_sizes" in node.attributes:
        sizes = [int(v) for v in _need(node, "category_sizes", (list, np.ndarray))]
        keep = _invalid_policy(node)
    else:
        sizes = [int(_need(node, "size", int))]
        # MLeap reads an old one-hot encoder without handle_invalid as "keep" when it drops
        # the last slot (the all-zero encoding of an unknown index), else as "error".
        keep = _invalid_policy(node) if "handle_invalid" in node.attributes else drop_last
    _columns(node, len(sizes))
    steps: list[Step] = []
    for index, size in enumerate(sizes):
        if size < 1:
            raise BundleError(f"node {node.name!r} (one_hot_encoder): size {size} is below 1")
        source, _, _ = read(index, ("numeric",))
        width = size + (1 if keep else 0) - (1 if drop_last else 0)
        steps.append(OneHot(source, write("vector", width, index), size, width, keep))
    return steps


def _logistic_step(node: Node, source: str, width: int) -> Linear | Multinomial:
    """Binary: coefficients and intercept. Multinomial (num_classes > 2, as Spark writes it):
    a (K, features) coefficient_matrix whose values are in column-major order (Spark's and
    MLeap's matrix layout) and intercept_vector."""
    classes = int(node.attributes.get("num_classes", 2))
    if classes == 2:
        coefficients = _vector(node, "coefficients", width)
        intercept = float(_need(node, "intercept", (int, float)))
        return Linear(source, coefficients, intercept, logistic=True)
    if classes < 2:
        raise BundleError(f"node {node.name!r} (logistic_regression): {classes} classes")
    matrix = np.asarray(_need(node, "coefficient_matrix", np.ndarray), dtype=np.float64)
    if matrix.shape != (classes, width):
        raise BundleError(
            f"node {node.name!r} (logistic_regression): coefficient_matrix is "
            f"{'x'.join(map(str, matrix.shape))}, expected {classes}x{width} "
            f"({classes} classes, {width} features in {source!r})"
        )
    if "threshold" in node.attributes:
        raise BundleError(
            f"node {node.name!r} (logistic_regression): a threshold applies to binary models "
            f"only, and this one has {classes} classes"
        )
    coefficients = matrix.ravel().reshape((classes, width), order="F")
    intercepts = _vector(node, "intercept_vector", classes)
    if not np.all(np.isfinite(coefficients)):
        raise BundleError(f"node {node.name!r} (logistic_regression): a non-finite coefficient")
    return Multinomial(source, coefficients, intercepts)


def _model_step(node: Node, source: str, width: int) -> Step:
    op = node.op
    if op == "logistic_regression":
        return _logistic_step(node, source, width)
    if op == "linear_regression":
        coefficients = _vector(node, "coefficients", width)
        intercept = float(_need(node, "intercept", (int, float)))
        return Linear(source, coefficients, intercept, logistic=False)
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
        check_attributes(tree)
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
