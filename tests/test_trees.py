"""The tree kernels against the libraries' own predict: XGBoost and LightGBM boosters (binary,
3-class, regression; missing values; categorical splits), multiclass forests against
scikit-learn, and Spark GBT bundles against MLeap's JVM runtime.

The whole-array kernel is the GPU path with numpy standing in for CuPy: there is no GPU here, so
it checks the GPU kernel's logic, not the device (nor nvForest, which needs one)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost
from conftest import customers_contract, export_model

from jobs import modeling
from jobs.bundle.boosters import booster_facts, forest_from_booster, write_booster_bundle
from jobs.bundle.format import BundleError, read_bundle
from jobs.bundle.mleap_check import compare
from jobs.bundle.program import build_program
from jobs.bundle.runtime import Plan, compile_bundle
from jobs.bundle.trees import Forest, array_kernel, cpu_kernel, raw_margin
from jobs.model_kinds import feature_layout
from jobs.sample_data import customers
from precompute.settings import Settings

TOLERANCE = 1e-6
CATEGORIES = 7
COLUMNS = ["a", "b", "c", "d"]  # c holds category codes
KERNELS: dict[str, Callable[[Forest], Callable[[Any], Any]]] = {
    "cpu": cpu_kernel,
    "array-numpy-stand-in": lambda forest: array_kernel(forest, np, 997),
}
TASKS = ["binary", "multiclass", "regression"]


def frame(rows: int, seed: int) -> pd.DataFrame:
    """Four features: NaN in a (10%) and d (5%), a pandas category column c."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows) * 100,
            "c": pd.Categorical(rng.integers(0, CATEGORIES, rows), categories=range(CATEGORIES)),
            "d": rng.normal(size=rows),
        }
    )
    data.loc[rng.random(rows) < 0.1, "a"] = np.nan
    data.loc[rng.random(rows) < 0.05, "d"] = np.nan
    return data


def codes(data: pd.DataFrame) -> np.ndarray:
    """The kernel's input: the category column as its codes, NaN for missing values."""
    return np.column_stack([data.a, data.b, data.c.cat.codes.astype(float), data.d])


def labels(data: pd.DataFrame, task: str) -> np.ndarray:
    signal = np.asarray(
        np.nan_to_num(data.a) + np.isin(data.c.cat.codes, [1, 4, 5]) + data.b / 100, float
    )
    d = np.asarray(data.d, float)
    if task == "binary":
        return np.asarray(signal > 0.5, int)
    if task == "multiclass":
        return np.asarray((signal > 0.5).astype(int) + (np.nan_to_num(d, nan=1.0) > 0), int)
    return np.asarray(signal * 3 + np.nan_to_num(d), float)


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    data = frame(2000, seed=1)
    # b never misses in training: a NaN there takes XGBoost's default branch and LightGBM's
    # "missing type None" path (NaN compared as 0).
    data.loc[np.random.default_rng(5).random(len(data)) < 0.1, "b"] = np.nan
    return data


@pytest.fixture(scope="module")
def xgboost_models() -> dict[str, Any]:
    train = frame(3000, seed=0)
    objectives: dict[str, dict[str, Any]] = {
        "binary": {"objective": "binary:logistic"},
        "multiclass": {"objective": "multi:softprob", "num_class": 3},
        "regression": {"objective": "reg:squarederror"},
    }
    models = {}
    for task, objective in objectives.items():
        matrix = xgboost.DMatrix(train, labels(train, task), enable_categorical=True)
        params = {**objective, "max_depth": 4, "max_cat_to_onehot": 1, "nthread": 1}
        models[task] = xgboost.train(params, matrix, num_boost_round=30)
    return models


@pytest.fixture(scope="module")
def lightgbm_models() -> dict[str, Any]:
    train = frame(3000, seed=0)
    objectives: dict[str, dict[str, Any]] = {
        "binary": {"objective": "binary"},
        "multiclass": {"objective": "multiclass", "num_class": 3},
        "regression": {"objective": "regression"},
    }
    features = pd.DataFrame(codes(train), columns=COLUMNS)
    models = {}
    for task, objective in objectives.items():
        data = lightgbm.Dataset(features, labels(train, task), categorical_feature=["c"])
        params = {**objective, "num_leaves": 15, "min_data_per_group": 5, "cat_smooth": 1.0}
        params |= {"verbose": -1, "num_threads": 1}
        models[task] = lightgbm.train(params, data, num_boost_round=30)
    return models


def xgboost_bytes(model: Any) -> bytes:
    return bytes(model.save_raw("json"))


def lightgbm_bytes(model: Any) -> bytes:
    return str(model.model_to_string()).encode()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("task", TASKS)
def test_xgboost_margins_and_probabilities_equal_xgboosts_predict(
    xgboost_models: dict[str, Any], held_out: pd.DataFrame, task: str, kernel: str
) -> None:
    model = xgboost_models[task]
    forest = forest_from_booster("xgboost", xgboost_bytes(model), "test")
    assert forest.has_categories and forest.float32_sum
    matrix = xgboost.DMatrix(held_out, enable_categorical=True)
    margin = model.predict(matrix, output_margin=True)
    predicted = model.predict(matrix)
    x = codes(held_out)

    ours_margin = KERNELS[kernel](raw_margin(forest))(x)
    ours = KERNELS[kernel](forest)(x)

    np.testing.assert_allclose(ours_margin, margin, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ours, predicted, rtol=0, atol=TOLERANCE)
    assert ours.shape == ((len(x), 3) if task == "multiclass" else (len(x),))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("task", TASKS)
def test_lightgbm_margins_and_probabilities_equal_lightgbms_predict(
    lightgbm_models: dict[str, Any], held_out: pd.DataFrame, task: str, kernel: str
) -> None:
    model = lightgbm_models[task]
    forest = forest_from_booster("lightgbm", lightgbm_bytes(model), "test")
    assert forest.has_categories and not forest.float32_sum
    x = codes(held_out)

    ours_margin = KERNELS[kernel](raw_margin(forest))(x)
    ours = KERNELS[kernel](forest)(x)

    np.testing.assert_allclose(ours_margin, model.predict(x, raw_score=True), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, model.predict(x), rtol=0, atol=TOLERANCE)


def _batch(data: pd.DataFrame) -> pa.RecordBatch:
    """Arrow columns as a contract delivers them: nulls for missing values, codes as ints."""
    columns = {"id": pa.array([f"r{i}" for i in range(len(data))])}
    for name in ("a", "b", "d"):
        columns[name] = pa.array(data[name].to_numpy(), mask=data[name].isna().to_numpy())
    columns["c"] = pa.array(data.c.cat.codes.to_numpy().astype(np.int64))
    return pa.RecordBatch.from_pydict(columns)


def _model_values(plan: Plan, batch: pa.RecordBatch) -> Any:
    """The model step's value (Plan.score turns a multiclass one into labels on main)."""
    env = {i.name: plan._input(batch, i.name, i.kind, i.nulls_allowed) for i in plan.program.inputs}
    result = None
    for position, step in enumerate(plan.program.steps):
        result = plan._run(position, step, env, np)
    return result


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("task", TASKS)
def test_a_booster_bundle_scores_arrow_batches_as_the_library_predicts(
    xgboost_models: dict[str, Any],
    lightgbm_models: dict[str, Any],
    held_out: pd.DataFrame,
    tmp_path: Path,
    kind: str,
    task: str,
) -> None:
    if kind == "xgboost":
        model = xgboost_models[task]
        expected = model.predict(xgboost.DMatrix(held_out, enable_categorical=True))
        written = xgboost_bytes(model)
    else:
        model = lightgbm_models[task]
        expected = model.predict(codes(held_out))
        written = lightgbm_bytes(model)
    path = write_booster_bundle(kind, written, COLUMNS, tmp_path / "b.zip", kind, {"k": 1})  # type: ignore[arg-type]
    bundle = read_bundle(path)
    assert bundle.metadata == {"k": 1}
    assert [n.op for n in bundle.nodes][
        -1
    ] == f"{kind}.{'regression' if task == 'regression' else 'classifier'}"
    plan = compile_bundle(bundle, "cpu", entity_id="id")
    assert plan.program.num_classes == {"binary": 2, "multiclass": 3, "regression": 0}[task]
    assert all(i.nulls_allowed for i in plan.program.inputs)  # a booster handles missing values
    batch = _batch(held_out)

    if task == "multiclass":
        scores = _model_values(plan, batch)
    else:
        scores = plan.score(batch).column("score").to_numpy()

    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


def test_an_xgboost_bundle_stores_ubjson_as_xgboost4j_writes_it(
    xgboost_models: dict[str, Any], tmp_path: Path
) -> None:
    model = xgboost_models["binary"]
    path = write_booster_bundle(
        "xgboost", xgboost_bytes(model), COLUMNS, tmp_path / "x.zip", "x", {}
    )
    with zipfile.ZipFile(path) as archive:
        stored = archive.read("root/xgboost_1.node/xgboost.model")
        node = json.loads(archive.read("root/xgboost_1.node/model.json"))
        shape = json.loads(archive.read("root/xgboost_1.node/node.json"))["shape"]
    assert stored[:1] == b"{" and stored[1:2] not in (b'"', b"\n", b" ")  # UBJSON, not JSON
    assert node == {
        "op": "xgboost.classifier",
        "attributes": {
            "num_features": {"int": 4},
            "tree_limit": {"int": 0},
            "num_classes": {"int": 2},
        },
    }
    assert shape["inputs"] == [{"name": "features", "port": "features"}]
    assert [o["port"] for o in shape["outputs"]] == ["raw_prediction", "probability", "prediction"]
    assert booster_facts("xgboost", stored).num_features == 4


def test_booster_facts_read_what_the_model_file_says(
    xgboost_models: dict[str, Any], lightgbm_models: dict[str, Any]
) -> None:
    facts = booster_facts("xgboost", xgboost_bytes(xgboost_models["multiclass"]))
    assert (facts.num_features, facts.num_classes, facts.task, facts.objective) == (
        4,
        3,
        "classification",
        "multi:softprob",
    )
    assert facts.feature_names == COLUMNS
    facts = booster_facts("lightgbm", lightgbm_bytes(lightgbm_models["regression"]))
    assert (facts.num_features, facts.num_classes, facts.task) == (4, 0, "regression")
    assert facts.feature_names == COLUMNS


def test_a_file_that_is_not_a_model_is_refused_in_one_line() -> None:
    for kind, name in (("xgboost", "XGBoost"), ("lightgbm", "LightGBM")):
        with pytest.raises(BundleError, match=f"is not an? {name}") as error:
            booster_facts(kind, b"not a model")  # type: ignore[arg-type]
        assert "\n" not in str(error.value)


def test_a_booster_whose_output_is_not_a_probability_is_refused(tmp_path: Path) -> None:
    train = frame(300, seed=0)
    matrix = xgboost.DMatrix(codes(train), labels(train, "binary"))
    model = xgboost.train({"objective": "binary:logitraw", "max_depth": 2}, matrix, 3)
    path = write_booster_bundle(
        "xgboost", xgboost_bytes(model), COLUMNS, tmp_path / "r.zip", "r", {}
    )
    with pytest.raises(
        BundleError, match="objective 'binary:logitraw' does not yield probabilities"
    ):
        build_program(read_bundle(path))


# ---- multiclass forests against scikit-learn ---------------------------------------------


@pytest.mark.parametrize("kind", ["random_forest", "decision_tree"])
def test_a_multiclass_forest_equals_scikit_learns_predict_proba(tmp_path: Path, kind: str) -> None:
    train, rows = customers(3000, seed=3), customers(1000, seed=4, first_id=10_000)
    spend = train.column("monthly_spend").to_numpy()
    target = np.digitize(spend, np.quantile(spend, [0.25, 0.5, 0.75]))  # 4 classes
    params = {"n_estimators": 15, "max_depth": 7} if kind == "random_forest" else {"max_depth": 7}
    pipeline, path = export_model(tmp_path, kind, train, target, params=params)
    layout = feature_layout(customers_contract())
    expected = pipeline.predict_proba(modeling.features_frame(rows, layout))
    plan = compile_bundle(read_bundle(path), "cpu")
    assert plan.program.num_classes == 4
    batch = rows.combine_chunks().to_batches()[0]

    for kernel in KERNELS.values():
        forest = plan.program.steps[-1].forest  # type: ignore[union-attr]
        plan.kernels[len(plan.program.steps) - 1] = kernel(forest)
        np.testing.assert_allclose(_model_values(plan, batch), expected, rtol=0, atol=1e-12)


# ---- Spark GBTs as MLeap writes them ----------------------------------------------------

# Three regression trees over features (x0, x1, category code x2); the third splits on
# categories {1, 3} going right (isLeft false).
GBT_TREES = [
    [
        {"type": "internal", "split": {"type": "continuous", "featureIndex": 0, "threshold": 0.5}},
        {"type": "leaf", "values": [-1.0]},
        {
            "type": "internal",
            "split": {"type": "continuous", "featureIndex": 1, "threshold": -0.25},
        },
        {"type": "leaf", "values": [0.3]},
        {"type": "leaf", "values": [1.0]},
    ],
    [
        {
            "type": "internal",
            "split": {
                "type": "categorical",
                "featureIndex": 2,
                "isLeft": True,
                "numCategories": 4,
                "categories": [0.0, 2.0],
            },
        },
        {"type": "leaf", "values": [0.5]},
        {"type": "leaf", "values": [-0.5]},
    ],
    [
        {"type": "internal", "split": {"type": "continuous", "featureIndex": 1, "threshold": 1.0}},
        {
            "type": "internal",
            "split": {
                "type": "categorical",
                "featureIndex": 2,
                "isLeft": False,
                "numCategories": 4,
                "categories": [1.0, 3.0],
            },
        },
        {"type": "leaf", "values": [0.2]},
        {"type": "leaf", "values": [-0.2]},
        {"type": "leaf", "values": [0.7]},
    ],
]
GBT_WEIGHTS = [1.0, 0.1, 0.1]


def _gbt_expected(x: np.ndarray) -> np.ndarray:
    """The trees above evaluated by hand, as Spark's GBT does: the weighted sum of leaves."""
    t0 = np.where(x[:, 0] <= 0.5, -1.0, np.where(x[:, 1] <= -0.25, 0.3, 1.0))
    t1 = np.where(np.isin(x[:, 2], [0.0, 2.0]), 0.5, -0.5)
    t2 = np.where(x[:, 1] <= 1.0, np.where(np.isin(x[:, 2], [1.0, 3.0]), -0.2, 0.2), 0.7)
    return t0 * 1.0 + t1 * 0.1 + t2 * 0.1


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return {"type": "list", "string": value}
    if isinstance(value, list):
        return {"type": "list", "double": value}
    return {"long": value}


def write_gbt_bundle(path: Path, op: str) -> Path:
    """A vector_assembler over x0, x1, x2 and a GBT node, laid out as MLeap writes Spark's."""
    files: dict[str, Any] = {
        "bundle.json": {
            "uid": "7c6b5a4e-0d1f-4e2a-9b3c-5d6e7f8a9b0c",
            "name": op,
            "format": "json",
            "version": "0.20.0",
            "timestamp": "2024-01-01T00:00:00",
        },
        "root/model.json": {"op": "pipeline", "attributes": {"nodes": _attr(["assemble", "gbt"])}},
        "root/node.json": {"name": op, "shape": {"inputs": [], "outputs": []}},
        "root/assemble.node/model.json": {
            "op": "vector_assembler",
            "attributes": {
                "input_shapes": {
                    "type": "list",
                    "data_shape": [{"base": "scalar", "isNullable": False}] * 3,
                }
            },
        },
        "root/assemble.node/node.json": {
            "name": "assemble",
            "shape": {
                "inputs": [{"name": f"x{i}", "port": f"input{i}"} for i in range(3)],
                "outputs": [{"name": "features", "port": "output"}],
            },
        },
    }
    attributes = {
        "num_features": 3,
        "tree_weights": GBT_WEIGHTS,
        "trees": ["tree0", "tree1", "tree2"],
    }
    outputs = [{"name": "prediction", "port": "prediction"}]
    if op == "gbt_classifier":
        attributes["num_classes"] = 2
        outputs.append({"name": "probability", "port": "probability"})
    files["root/gbt.node/model.json"] = {
        "op": op,
        "attributes": {k: _attr(v) for k, v in attributes.items()},
    }
    files["root/gbt.node/node.json"] = {
        "name": "gbt",
        "shape": {"inputs": [{"name": "features", "port": "features"}], "outputs": outputs},
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, json.dumps(content))
        for i, tree in enumerate(GBT_TREES):
            model = {"op": "decision_tree_regression", "attributes": {"num_features": {"long": 3}}}
            archive.writestr(f"root/gbt.node/tree{i}/model.json", json.dumps(model))
            archive.writestr(
                f"root/gbt.node/tree{i}/tree.json", "\n".join(json.dumps(n) for n in tree)
            )
    return path


def gbt_rows() -> pa.Table:
    rng = np.random.default_rng(7)
    x0 = np.concatenate([[0.5, np.nextafter(0.5, 1)], rng.normal(size=398)])
    x1 = np.concatenate([[-0.25, 1.0], rng.normal(size=398)])
    x2 = np.concatenate([[1.5, 4.0], rng.integers(0, 4, 398).astype(float)])  # 1.5: no category
    return pa.table({"id": [f"g{i}" for i in range(400)], "x0": x0, "x1": x1, "x2": x2})


@pytest.mark.parametrize("op", ["gbt_classifier", "gbt_regression"])
def test_a_spark_gbt_bundle_scores_its_weighted_tree_sum(tmp_path: Path, op: str) -> None:
    rows = gbt_rows()
    x = np.column_stack([rows.column(c).to_numpy() for c in ("x0", "x1", "x2")])
    margin = _gbt_expected(x)
    # MLeap's GBT classifier: P(1) = 1 - 1 / (1 + exp(2 * margin)).
    expected = 1 - 1 / (1 + np.exp(2 * margin)) if op == "gbt_classifier" else margin
    bundle = read_bundle(write_gbt_bundle(tmp_path / f"{op}.zip", op))

    for kernel in KERNELS.values():
        plan = compile_bundle(bundle, "cpu", entity_id="id")
        plan.kernels[len(plan.program.steps) - 1] = kernel(plan.program.steps[-1].forest)  # type: ignore[union-attr]
        np.testing.assert_allclose(
            plan.score(rows).column("score").to_numpy(), expected, rtol=0, atol=1e-15
        )


def test_spark_gbt_bundles_score_the_same_in_mleaps_runtime(
    tmp_path: Path, settings: Settings
) -> None:
    rows = gbt_rows()
    bundles = [
        (write_gbt_bundle(tmp_path / f"{op}.zip", op), rows)
        for op in ("gbt_classifier", "gbt_regression")
    ]
    for parity in compare(bundles, settings):
        assert parity.rows == 400
        assert parity.agrees, parity.summary()
