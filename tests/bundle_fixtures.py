"""Bundle.ML fixtures as other programs write them: MLeap on Spark ML, and the `mleap` package.

`spark_*` bundles are written here in exactly the JSON form MLeap's Spark side writes with
`serializeToBundle` (bundle-ml's JsonSupport: a scalar equal to zero is left out as `{}`, NaN
and infinities are written as null, matrices are column-major tensors, Spark's port names and
attribute names per op). This writer stands in for running Spark's `serializeToBundle`, which
needs MLeap-Spark JARs for Spark 3 that this project does not run; its parameter values are
fitted with scikit-learn and numpy on generated data, so the numbers are realistic, and every
fixture is checked in MLeap's own JVM runtime (tests/test_bundle_ops.py).

`sklearn_*` bundles are written by the `mleap` package's own scikit-learn serializers from a
user's scikit-learn pipeline (FeatureExtractor, MinMaxScaler, StandardScaler,
LogisticRegression). Its imputer cannot follow a FeatureExtractor (it writes a vector input
that MLeap's scalar imputer refuses), and it refuses `most_frequent`.
"""

from __future__ import annotations

import importlib
import json
import math
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler, normalize

SPARK_MLEAP_VERSION = "0.20.0"
PLANS = ["basic", "plus", "pro"]
REGIONS = ["north", "south", "east", "west"]
SEGMENTS = ["retail", "smb", "enterprise"]


# -- values as bundle-ml's JSON writer writes them ------------------------------------------


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN or infinity


def double(value: float) -> dict[str, Any]:
    return {} if value == 0 else {"double": _number(value)}


def integer(value: int) -> dict[str, Any]:
    return {} if value == 0 else {"int": int(value)}


def long(value: int) -> dict[str, Any]:
    return {} if value == 0 else {"long": int(value)}


def boolean(value: bool) -> dict[str, Any]:
    return {"boolean": True} if value else {}


def string(value: str) -> dict[str, Any]:
    return {"string": value} if value else {}


def doubles(values: Any) -> dict[str, Any]:
    return {"type": "list", "double": [_number(v) for v in values]}


def integers(values: Any) -> dict[str, Any]:
    return {"type": "list", "int": [int(v) for v in values]}


def strings(values: Any) -> dict[str, Any]:
    return {"type": "list", "string": [str(v) for v in values]}


def tensor(values: Any) -> dict[str, Any]:
    """A tensor (Spark's vector or matrix); a matrix's values go in column-major order."""
    array = np.asarray(values, dtype=np.float64)
    flat = array.ravel(order="F")
    dims = [{"size": int(d), "name": ""} for d in array.shape]
    return {"type": "tensor", "double": [_number(v) for v in flat], "shape": {"dimensions": dims}}


def shape(width: int | None) -> dict[str, Any]:
    """A data shape: a scalar (width None) or a vector of `width`."""
    if width is None:
        return {"base": "scalar", "isNullable": False}
    dims = {"dimensions": [{"size": width, "name": ""}]}
    return {"base": "tensor", "isNullable": False, "tensorShape": dims}


@dataclass
class SparkNode:
    """One stage as MLeap's Spark ops write it: op, attributes and (column, port) pairs."""

    name: str
    op: str
    attributes: dict[str, dict[str, Any]]
    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]


def write_bundle(path: Path, name: str, nodes: list[SparkNode]) -> Path:
    """The zip Spark's `serializeToBundle("jar:file:...")` writes for a fitted PipelineModel."""
    files: dict[str, Any] = {
        "bundle.json": {
            "uid": str(uuid.uuid4()),
            "name": name,
            "format": "json",
            "version": SPARK_MLEAP_VERSION,
            "timestamp": "2026-01-05T10:00:00.000",
        },
        "root/model.json": {
            "op": "pipeline",
            "attributes": {"nodes": strings([n.name for n in nodes])},
        },
        "root/node.json": {"name": name, "shape": {"inputs": [], "outputs": []}},
    }
    for node in nodes:
        files[f"root/{node.name}.node/model.json"] = {"op": node.op, "attributes": node.attributes}
        files[f"root/{node.name}.node/node.json"] = {
            "name": node.name,
            "shape": {
                "inputs": [{"name": c, "port": p} for c, p in node.inputs],
                "outputs": [{"name": c, "port": p} for c, p in node.outputs],
            },
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in files.items():
            archive.writestr(member, json.dumps(content, indent=2))
    return path


def _model_ports() -> list[tuple[str, str]]:
    return [
        ("raw_prediction", "raw_prediction"),
        ("probability", "probability"),
        ("prediction", "prediction"),
    ]


def _labels(values: list[str | None]) -> list[str]:
    """Spark's StringIndexer order (frequencyDesc): most frequent first, ties alphabetical."""
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    return sorted(counts, key=lambda v: (-counts[v], v))


# -- generated data -----------------------------------------------------------------------


def customers(rows: int, seed: int) -> pa.Table:
    """Customers with categories, missing ages and visits, and a 3-class and a binary target."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, rows)
    segment = rng.choice(SEGMENTS, rows, p=[0.6, 0.3, 0.1])
    # float32-exact numbers: a tree split compares float32(x) in scikit-learn and the double x
    # in Spark, the same answer only for such values (the GBT fixtures rely on that).
    age = _f32(rng.normal(41, 12, rows).round(1))
    visits = rng.poisson(6, rows).astype(np.float64)
    income = _f32(rng.lognormal(10.5, 0.5, rows).round(2))
    tenure = _f32(rng.gamma(2.0, 10.0, rows).round(1))
    spend = _f32(rng.normal(0, 1, (rows, 2)))
    z = 0.05 * (age - 40) + 0.3 * (visits - 6) + np.where(plan == "pro", 1.5, 0.0)
    tier = np.digitize(z + rng.normal(0, 0.7, rows), [-0.5, 0.8])
    churned = (0.03 * tenure - spend[:, 0] + rng.normal(0, 1, rows) < 0.2).astype(np.int64)
    age_missing = rng.random(rows) < 0.08
    visits_missing = rng.random(rows) < 0.05
    return pa.table(
        {
            "customer_id": [f"c{i:05d}" for i in range(rows)],
            "plan": plan.tolist(),
            "region": region.tolist(),
            "segment": segment.tolist(),
            "age": pa.array(age, mask=age_missing),
            "visits": pa.array(visits, mask=visits_missing),
            "income": income,
            "tenure": tenure,
            "spend_a": spend[:, 0],
            "spend_b": spend[:, 1],
            "tier": tier,
            "churned": churned,
        }
    )


def _f32(values: Any) -> Any:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(table: pa.Table, name: str) -> list[Any]:
    return list(table.column(name).to_pylist())


def one_hot(values: list[Any], labels: list[str], size: int, keep: bool, drop_last: bool) -> Any:
    """numpy's own encoding of an indexer (unknown -> len(labels)) then a one-hot encoder."""
    codes = np.array([labels.index(v) if v in labels else len(labels) for v in values])
    width = size + (1 if keep else 0) - (1 if drop_last else 0)
    out = np.zeros((len(values), width))
    inside = codes < width
    out[np.arange(len(values))[inside], codes[inside]] = 1.0
    return out


# -- Spark ML pipelines -------------------------------------------------------------------


@dataclass
class Fixture:
    """A written bundle and the scikit-learn/numpy computation of what it must score."""

    path: Path
    expected: Any  # rows (pa.Table) -> (n,) or (n, K) array


def spark_multiclass(folder: Path, train: pa.Table) -> Fixture:
    """StringIndexer x2 (keep) -> OneHotEncoder on both (Spark 3's multi-column form, sizes
    with the unknown label, drop_last) -> Imputer median and mode -> VectorAssembler ->
    MinMaxScaler -> multinomial LogisticRegression (3 classes)."""
    plan_labels = _labels(_strings(train, "plan"))
    region_labels = _labels(_strings(train, "region"))
    age, visits = _column(train, "age"), _column(train, "visits")
    age_fill = float(np.nanmedian(age))
    values, counts = np.unique(visits[~np.isnan(visits)], return_counts=True)
    visits_fill = float(values[np.argmax(counts)])  # Spark's mode: the smallest most frequent
    sizes = [len(plan_labels) + 1, len(region_labels) + 1]

    def features(rows: pa.Table) -> Any:
        plan = one_hot(_strings(rows, "plan"), plan_labels, sizes[0], False, True)
        region = one_hot(_strings(rows, "region"), region_labels, sizes[1], False, True)
        a, v = _column(rows, "age"), _column(rows, "visits")
        numeric = np.column_stack(
            [np.where(np.isnan(a), age_fill, a), np.where(np.isnan(v), visits_fill, v)]
        )
        return np.hstack([plan, region, numeric])

    scaler = MinMaxScaler().fit(features(train))
    model = LogisticRegression(C=10.0, max_iter=2000).fit(
        scaler.transform(features(train)), _column(train, "tier")
    )
    width = features(train.slice(0, 1)).shape[1]
    nodes = [
        SparkNode(
            "strIdx_plan_6f1e0c2d",
            "string_indexer",
            {
                "labels_length": integer(1),
                "handle_invalid": string("keep"),
                "labels_array_0": strings(plan_labels),
            },
            [("plan", "input")],
            [("plan_index", "output")],
        ),
        SparkNode(
            "strIdx_region_9a7b3e41",
            "string_indexer",
            {
                "labels_length": integer(1),
                "handle_invalid": string("keep"),
                "labels_array_0": strings(region_labels),
            },
            [("region", "input")],
            [("region_index", "output")],
        ),
        SparkNode(
            "oneHotEncoder_2c8d91f0",
            "one_hot_encoder",
            {
                "category_sizes": integers(sizes),
                "drop_last": boolean(True),
                "handle_invalid": string("error"),
            },
            [("plan_index", "input0"), ("region_index", "input1")],
            [("plan_vec", "output0"), ("region_vec", "output1")],
        ),
        _imputer("imputer_age_5d2a", "age", "age_filled", age_fill, "median"),
        _imputer("imputer_visits_77c1", "visits", "visits_filled", visits_fill, "mode"),
        SparkNode(
            "vecAssembler_0b4e7d19",
            "vector_assembler",
            {
                "input_shapes": {
                    "type": "list",
                    "data_shape": [
                        shape(sizes[0] - 1),
                        shape(sizes[1] - 1),
                        shape(None),
                        shape(None),
                    ],
                }
            },
            [
                ("plan_vec", "input0"),
                ("region_vec", "input1"),
                ("age_filled", "input2"),
                ("visits_filled", "input3"),
            ],
            [("raw_features", "output")],
        ),
        SparkNode(
            "minMaxScal_4410aa3c",
            "min_max_scaler",
            {
                "min": tensor(scaler.data_min_),
                "max": tensor(scaler.data_max_),
                "minValue": double(0.0),
                "maxValue": double(1.0),
            },
            [("raw_features", "input")],
            [("features", "output")],
        ),
        SparkNode(
            "logreg_c81f02b7",
            "logistic_regression",
            {
                "num_classes": long(3),
                "coefficient_matrix": tensor(model.coef_),
                "intercept_vector": tensor(model.intercept_),
            },
            [("features", "features")],
            _model_ports(),
        ),
    ]
    assert model.coef_.shape == (3, width)
    path = write_bundle(folder / "spark_multiclass.zip", "spark_multiclass", nodes)
    return Fixture(path, lambda rows: model.predict_proba(scaler.transform(features(rows))))


def _imputer(name: str, source: str, target: str, fill: float, strategy: str) -> SparkNode:
    """mleap-spark-extension's Imputer op (MLeap has no op for Spark's own Imputer)."""
    return SparkNode(
        name,
        "imputer",
        {
            "nullable_input": boolean(True),
            "surrogate_value": double(fill),
            "missing_value": double(math.nan),
            "strategy": string(strategy),
        },
        [(source, "input")],
        [(target, "output")],
    )


def spark_binary(folder: Path, train: pa.Table) -> Fixture:
    """VectorAssembler -> Normalizer (p=1.5) on two scores; Bucketizer (quartile splits,
    -inf and inf at the ends, keep) on income; Binarizer on tenure; StringIndexer (keep) ->
    OneHotEncoder (keep, no drop_last) on segment; VectorAssembler -> MaxAbsScaler -> binary
    LogisticRegression with threshold 0.4."""
    segment_labels = _labels(_strings(train, "segment"))
    income = _column(train, "income")
    splits = np.concatenate([[-np.inf], np.quantile(income, [0.25, 0.5, 0.75]), [np.inf]])
    p_norm, cut = 1.5, 12.0
    size = len(segment_labels) + 1

    def features(rows: pa.Table) -> Any:
        spend = normalize_p(
            np.column_stack([_column(rows, "spend_a"), _column(rows, "spend_b")]), p_norm
        )
        bucket = np.digitize(_column(rows, "income"), splits[1:-1]).astype(np.float64)
        binary = (_column(rows, "tenure") > cut).astype(np.float64)
        segment = one_hot(_strings(rows, "segment"), segment_labels, size, True, False)
        return np.hstack([spend, binary[:, None], bucket[:, None], segment])

    scaler = MaxAbsScaler().fit(features(train))
    model = LogisticRegression(C=10.0, max_iter=2000).fit(
        scaler.transform(features(train)), _column(train, "churned")
    )
    width = 4 + size + 1
    nodes = [
        SparkNode(
            "vecAssembler_spend_31aa",
            "vector_assembler",
            {"input_shapes": {"type": "list", "data_shape": [shape(None), shape(None)]}},
            [("spend_a", "input0"), ("spend_b", "input1")],
            [("spend", "output")],
        ),
        SparkNode(
            "normalizer_8e02",
            "normalizer",
            {"p_norm": double(p_norm), "input_size": integer(2)},
            [("spend", "input")],
            [("spend_normed", "output")],
        ),
        SparkNode(
            "bucketizer_a61c",
            "bucketizer",
            {"splits": doubles(splits), "handle_invalid": string("keep")},
            [("income", "input")],
            [("income_bucket", "output")],
        ),
        SparkNode(
            "binarizer_19f7",
            "binarizer",
            {"threshold": double(cut), "input_shapes": {"data_shape": shape(None)}},
            [("tenure", "input")],
            [("long_tenure", "output")],
        ),
        SparkNode(
            "strIdx_segment_d2c4",
            "string_indexer",
            {
                "labels_length": integer(1),
                "handle_invalid": string("keep"),
                "labels_array_0": strings(segment_labels),
            },
            [("segment", "input")],
            [("segment_index", "output")],
        ),
        SparkNode(
            "oneHotEncoder_segment_e930",
            "one_hot_encoder",
            {
                "category_sizes": integers([size]),
                "drop_last": boolean(False),
                "handle_invalid": string("keep"),
            },
            [("segment_index", "input")],
            [("segment_vec", "output")],
        ),
        SparkNode(
            "vecAssembler_all_77e0",
            "vector_assembler",
            {
                "input_shapes": {
                    "type": "list",
                    "data_shape": [shape(2), shape(None), shape(None), shape(size + 1)],
                }
            },
            [
                ("spend_normed", "input0"),
                ("long_tenure", "input1"),
                ("income_bucket", "input2"),
                ("segment_vec", "input3"),
            ],
            [("raw_features", "output")],
        ),
        SparkNode(
            "maxAbsScal_5b6d",
            "max_abs_scaler",
            {"maxAbs": tensor(scaler.max_abs_)},
            [("raw_features", "input")],
            [("features", "output")],
        ),
        SparkNode(
            "logreg_0f3a",
            "logistic_regression",
            {
                "num_classes": long(2),
                "coefficients": tensor(model.coef_[0]),
                "intercept": double(float(model.intercept_[0])),
                "threshold": double(0.4),
            },
            [("features", "features")],
            _model_ports(),
        ),
    ]
    assert model.coef_.shape == (1, width)
    path = write_bundle(folder / "spark_binary.zip", "spark_binary", nodes)

    def expected(rows: pa.Table) -> Any:
        # MLeap's MaxAbsScaler clips to [-1, 1] (scikit-learn's and Spark's do not): values
        # beyond the training data's largest magnitude are held at the edge.
        scaled = np.clip(scaler.transform(features(rows)), -1.0, 1.0)
        return model.predict_proba(scaled)[:, 1]

    return Fixture(path, expected)


def spark_regression(folder: Path, train: pa.Table) -> Fixture:
    """VectorAssembler -> PolynomialExpansion (degree 2) -> StandardScaler (with mean) ->
    LinearRegression of income on spend and tenure."""

    def features(rows: pa.Table) -> Any:
        x, y = _column(rows, "spend_a"), _column(rows, "tenure")
        return np.column_stack([x, x * x, y, x * y, y * y])  # Spark's documented order

    scaler = StandardScaler().fit(features(train))
    target = _column(train, "income") / 1000 + 3 * _column(train, "spend_a") ** 2
    model = LinearRegression().fit(scaler.transform(features(train)), target)
    nodes = [
        SparkNode(
            "vecAssembler_poly_1e2f",
            "vector_assembler",
            {"input_shapes": {"type": "list", "data_shape": [shape(None), shape(None)]}},
            [("spend_a", "input0"), ("tenure", "input1")],
            [("pair", "output")],
        ),
        SparkNode(
            "polyExpansion_3c9d",
            "polynomial_expansion",
            {"degree": long(2), "input_size": long(2)},
            [("pair", "input")],
            [("poly", "output")],
        ),
        SparkNode(
            "stdScal_77ab",
            "standard_scaler",
            {"mean": tensor(scaler.mean_), "std": tensor(scaler.scale_)},
            [("poly", "input")],
            [("features", "output")],
        ),
        SparkNode(
            "linReg_5e61",
            "linear_regression",
            {"coefficients": tensor(model.coef_), "intercept": double(float(model.intercept_))},
            [("features", "features")],
            [("prediction", "prediction")],
        ),
    ]
    path = write_bundle(folder / "spark_regression.zip", "spark_regression", nodes)
    return Fixture(path, lambda rows: model.predict(scaler.transform(features(rows))))


GBT_COLUMNS = ["spend_a", "spend_b", "tenure", "income"]


def spark_gbt(folder: Path, train: pa.Table, classifier: bool) -> Fixture:
    """VectorAssembler -> GBTClassifier (binary) or GBTRegressor as Spark writes them: one
    `tree<i>/` folder per tree (decision_tree_regression, tree.json in pre-order), tree_weights,
    margin = sum of weight * tree, P(1) = 1 / (1 + exp(-2 * margin)) for the classifier.
    Fitted with scikit-learn's gradient boosting, rewritten in Spark's form: its initial
    prediction becomes a one-leaf first tree of weight 1, the learning rate the other weights,
    and a classifier's leaf values are halved (Spark's log loss doubles the margin)."""
    x = np.column_stack([_column(train, c) for c in GBT_COLUMNS])
    estimator = GradientBoostingClassifier if classifier else GradientBoostingRegressor
    target = _column(train, "churned" if classifier else "income") / (1 if classifier else 1000)
    model = estimator(n_estimators=12, max_depth=3, learning_rate=0.2, random_state=0)
    model.fit(x, target)
    scale = 0.5 if classifier else 1.0
    init = float(model._raw_predict_init(x[:1])[0, 0])
    trees = [[{"type": "leaf", "values": [init * scale]}]]
    trees += [_spark_tree(t.tree_, scale) for t in model.estimators_[:, 0]]
    weights = [1.0] + [model.learning_rate] * (len(trees) - 1)
    op = "gbt_classifier" if classifier else "gbt_regression"
    attributes = {
        "num_features": long(len(GBT_COLUMNS)),
        "tree_weights": doubles(weights),
        "trees": strings([f"tree{i}" for i in range(len(trees))]),
    }
    if classifier:
        attributes["num_classes"] = long(2)
    ports = _model_ports() if classifier else [("prediction", "prediction")]
    nodes = [
        SparkNode(
            "vecAssembler_gbt_4d1a",
            "vector_assembler",
            {"input_shapes": {"type": "list", "data_shape": [shape(None)] * len(GBT_COLUMNS)}},
            [(c, f"input{i}") for i, c in enumerate(GBT_COLUMNS)],
            [("features", "output")],
        ),
        SparkNode(f"{op}_9b7e", op, attributes, [("features", "features")], ports),
    ]
    name = f"spark_{op}"
    path = write_bundle(folder / f"{name}.zip", name, nodes)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        for i, tree in enumerate(trees):
            where = f"root/{op}_9b7e.node/tree{i}"
            model_json = {
                "op": "decision_tree_regression",
                "attributes": {"num_features": long(len(GBT_COLUMNS))},
            }
            archive.writestr(f"{where}/model.json", json.dumps(model_json))
            archive.writestr(f"{where}/tree.json", "\n".join(json.dumps(n) for n in tree) + "\n")

    def expected(rows: pa.Table) -> Any:
        features = np.column_stack([_column(rows, c) for c in GBT_COLUMNS])
        if classifier:
            return model.predict_proba(features)[:, 1]
        return model.predict(features)

    return Fixture(path, expected)


def _spark_tree(tree: Any, scale: float) -> list[dict[str, Any]]:
    """A scikit-learn tree's nodes in pre-order, as bundle-ml's TreeSerializer writes them."""
    lines: list[dict[str, Any]] = []

    def visit(node: int) -> None:
        if tree.children_left[node] < 0:
            lines.append({"type": "leaf", "values": [float(tree.value[node, 0, 0]) * scale]})
            return
        split = {
            "type": "continuous",
            "featureIndex": int(tree.feature[node]),
            "threshold": float(tree.threshold[node]),
        }
        lines.append({"type": "internal", "split": split})
        visit(int(tree.children_left[node]))
        visit(int(tree.children_right[node]))

    visit(0)
    return lines


def normalize_p(x: Any, p: float) -> Any:
    """Rows divided by their p-norm (scikit-learn's `normalize` has only l1, l2 and max)."""
    if p in (1, 2):
        return normalize(x, norm=f"l{int(p)}")
    norm = (np.abs(x) ** p).sum(axis=1) ** (1 / p)
    return x / np.where(norm == 0, 1.0, norm)[:, None]


# -- the mleap package's scikit-learn serializers ------------------------------------------


def sklearn_pipeline(folder: Path, train: pa.Table, classes: int) -> Fixture:
    """A user's scikit-learn pipeline written by mleap's serializers: FeatureExtractor ->
    MinMaxScaler -> StandardScaler -> LogisticRegression (binary, or 3 classes on the tier).
    mleap declares only a `prediction` output on the model node; the probability port is added
    so that MLeap's runtime computes the probabilities to compare."""
    for module in ("pipeline", "preprocessing.data", "logistic"):
        importlib.import_module(f"mleap.sklearn.{module}")  # attaches mleap's serializers
    from mleap.sklearn.preprocessing.data import FeatureExtractor  # after the patching above

    columns = ["spend_a", "spend_b", "tenure", "income"]
    frame = pd.DataFrame({c: _column(train, c) for c in columns})
    extract = FeatureExtractor(input_scalars=columns, output_vector="raw_features")
    minmax = MinMaxScaler()
    minmax.mlinit(prior_tf=extract, output_features="unit_features")
    standard = StandardScaler()
    standard.mlinit(prior_tf=minmax, output_features="features")
    model = LogisticRegression(C=10.0, max_iter=2000)
    model.mlinit(input_features="features", prediction_column="prediction")
    stages = [extract, minmax, standard, model]
    pipeline = Pipeline([(s.name, s) for s in stages])
    pipeline.mlinit()
    target = _column(train, "tier" if classes > 2 else "churned")
    pipeline.fit(frame, target)
    name = f"sklearn_{'multiclass' if classes > 2 else 'binary'}"
    with tempfile.TemporaryDirectory() as scratch:
        pipeline.serialize_to_bundle(scratch, name, init=True)
        source = Path(scratch, f"{name}.zip")
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
            for item in old.infolist():
                data = old.read(item)
                if item.filename.startswith("root/logistic_regression") and item.filename.endswith(
                    "node.json"
                ):
                    node = json.loads(data)
                    node["shape"]["outputs"].append({"name": "probability", "port": "probability"})
                    data = json.dumps(node).encode()
                new.writestr(item, data)

    def expected(rows: pa.Table) -> Any:
        proba = pipeline.predict_proba(pd.DataFrame({c: _column(rows, c) for c in columns}))
        return proba if classes > 2 else proba[:, 1]

    return Fixture(path, expected)


def user_pipeline(
    folder: Path, name: str, frame: pd.DataFrame, target: np.ndarray, middle: Any = None
) -> tuple[Any, Path]:
    """A scikit-learn pipeline as a user writes one for MLeap: mleap's FeatureExtractor over
    `frame`'s columns, a standard scaler (or `middle`), logistic regression; fitted and
    serialised with mleap's own serializers. Returns (pipeline, folder with `name`.zip and
    the bundle folder `name`)."""
    # Importing mleap's modules attaches its serializers to scikit-learn's classes.
    for module in ("pipeline", "logistic", "decomposition.pca"):
        importlib.import_module(f"mleap.sklearn.{module}")
    from mleap.sklearn.preprocessing.data import FeatureExtractor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    columns = list(frame.columns)
    extract = FeatureExtractor(
        input_scalars=columns, output_vector="raw", output_vector_items=columns
    )
    if middle is None:
        middle = StandardScaler()
        middle.mlinit(prior_tf=extract, output_features="prepared")
    else:
        middle.mlinit(input_features="raw", prediction_column="prepared")
    model = LogisticRegression()
    model.mlinit(input_features="prepared", prediction_column="churn_prediction")
    pipeline = Pipeline([(extract.name, extract), (middle.name, middle), (model.name, model)])
    pipeline.mlinit()
    pipeline.fit(frame, target)
    pipeline.serialize_to_bundle(str(folder), name, init=True)
    return pipeline, folder
