"""The bundle runtime against scikit-learn: parity per model kind and backend, and refusals."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import customers_contract, export_model
from sklearn import datasets

from jobs import modeling
from jobs.bundle.backends import Backend, gpu_available
from jobs.bundle.format import BundleError, read_bundle
from jobs.bundle.program import build_program
from jobs.bundle.runtime import ScoringError, compile_bundle
from jobs.bundle.thresholds import float32_floor
from jobs.bundle.treelite_forest import to_treelite
from jobs.bundle.trees import Forest, array_kernel
from jobs.model_kinds import Task, feature_layout
from jobs.sample_data import customers
from precompute.contracts import Contract

TOLERANCE = 1e-6
KINDS = [
    ("logistic_regression", "classification"),
    ("linear_regression", "regression"),
    ("random_forest", "classification"),
    ("random_forest", "regression"),
    ("decision_tree", "classification"),
    ("decision_tree", "regression"),
]


def cpu(bundle: Any) -> Any:
    return compile_bundle(bundle, "cpu")


def array_stand_in(bundle: Any) -> Any:
    """The GPU backend's whole-array code path with numpy standing in for CuPy: no GPU here,
    so this checks the GPU kernel's logic, not the device."""
    return compile_bundle(bundle, backend=Backend("array", np, lambda f: array_kernel(f, np, 997)))


def gpu(bundle: Any) -> Any:
    if not gpu_available():
        pytest.skip("no CUDA device visible to CuPy on this machine")
    return compile_bundle(bundle, "gpu")


BACKENDS = [
    pytest.param(cpu, id="cpu"),
    pytest.param(array_stand_in, id="array-numpy-stand-in"),
    pytest.param(gpu, id="gpu", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Customers (nulls in four columns, categorical plan and region) and fitted bundles."""
    folder = tmp_path_factory.mktemp("bundles")
    train, held_out = customers(6000, seed=3), customers(3000, seed=4, first_id=10_000)
    # Scoring data may hold categories training never saw (or nulls): both encode as zeros.
    plan = held_out.column("plan").to_pylist()
    plan[:50] = ["enterprise"] * 25 + [None] * 25
    held_out = held_out.set_column(
        held_out.schema.get_field_index("plan"), "plan", pa.array(plan, pa.string())
    )
    models = {}
    for kind, task in KINDS:
        target = (
            train.column("churned").to_numpy(zero_copy_only=False)
            if task == "classification"
            else train.column("monthly_spend").to_numpy() * 1.5 + train.column("age").to_numpy()
        )
        models[(kind, task)] = export_model(folder, kind, train, target, task=task)
    return {"models": models, "held_out": held_out, "contract": customers_contract()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kind", "task"), KINDS, ids=[f"{k}-{t}" for k, t in KINDS])
def test_runtime_scores_equal_scikit_learn_on_synthetic_data(
    synthetic: dict[str, Any], kind: str, task: Task, backend: Any
) -> None:
    pipeline, path = synthetic["models"][(kind, task)]
    held_out = synthetic["held_out"]
    layout = feature_layout(synthetic["contract"])
    expected = modeling.positive_scores(pipeline, modeling.features_frame(held_out, layout), task)

    out = backend(read_bundle(path)).score(held_out)

    np.testing.assert_allclose(out.column("score").to_numpy(), expected, rtol=0, atol=TOLERANCE)
    assert out.column("entity_id").to_pylist() == held_out.column("customer_id").to_pylist()
    if task == "classification":
        want = np.where(
            pipeline.predict(modeling.features_frame(held_out, layout)), "true", "false"
        )
        assert out.column("label").to_pylist() == want.tolist()
    else:
        assert out.column("label").null_count == len(held_out)


def _builtin(name: str) -> tuple[Contract, pa.Table, np.ndarray]:
    """A scikit-learn built-in data set as a contract and an Arrow table."""
    data = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    features = [c for c in frame.columns if c != "target"]
    contract = Contract.model_validate(
        {
            "name": name,
            "version": 1,
            "entity_id": {"name": "row_id", "type": "long", "nullable": False},
            "features": [{"name": f, "type": "double", "nullable": False} for f in features],
        }
    )
    table = pa.table(
        {"row_id": np.arange(len(frame)), **{f: frame[f].to_numpy() for f in features}}
    )
    return contract, table, frame["target"].to_numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kind", "task"), KINDS, ids=[f"{k}-{t}" for k, t in KINDS])
def test_runtime_scores_equal_scikit_learn_on_builtin_data(
    tmp_path: Path, kind: str, task: Task, backend: Any
) -> None:
    contract, table, target = _builtin("breast_cancer" if task == "classification" else "diabetes")
    order = np.random.default_rng(0).permutation(table.num_rows)
    cut = int(len(order) * 0.7)
    train, held_out = table.take(order[:cut]), table.take(order[cut:])
    params = {"n_estimators": 40} if kind == "random_forest" else None
    pipeline, path = export_model(
        tmp_path, kind, train, target[order[:cut]], contract, task, params
    )
    layout = feature_layout(contract)
    expected = modeling.positive_scores(pipeline, modeling.features_frame(held_out, layout), task)

    out = backend(read_bundle(path)).score(held_out)

    np.testing.assert_allclose(out.column("score").to_numpy(), expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("kind", "task"),
    [("logistic_regression", "classification"), ("linear_regression", "regression")],
)
def test_a_folded_linear_model_scores_as_its_steps_do(
    synthetic: dict[str, Any], kind: str, task: str
) -> None:
    _, path = synthetic["models"][(kind, task)]
    bundle = read_bundle(path)
    folded, stepwise = compile_bundle(bundle, "cpu"), compile_bundle(bundle, "cpu", fold=False)
    assert [type(s).__name__ for s in folded.program.steps] == ["LinearTerms"]
    assert len(stepwise.program.steps) > 5
    held_out = synthetic["held_out"]
    np.testing.assert_allclose(
        folded.score(held_out).column("score").to_numpy(),
        stepwise.score(held_out).column("score").to_numpy(),
        rtol=0,
        atol=1e-12,
    )


def test_float32_floor_gives_scikit_learns_split_for_every_float32() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=20_000).astype(np.float32)
    b = np.nextafter(a, np.float32(np.inf))
    thresholds = (a.astype(np.float64) + b.astype(np.float64)) / 2  # how sklearn places splits
    floored = np.array([float32_floor(t) for t in thresholds], np.float32)
    for x in (a, b):
        assert np.array_equal(x <= floored, x.astype(np.float64) <= thresholds)


def test_forest_converts_to_treelite_with_the_same_scores(synthetic: dict[str, Any]) -> None:
    import treelite

    _, path = synthetic["models"][("random_forest", "classification")]
    plan = cpu(read_bundle(path))
    forest: Forest = plan.program.steps[-1].forest
    x = np.random.default_rng(2).normal(0, 60, (2000, forest.num_features))
    ours = plan.kernels[len(plan.program.steps) - 1](x)
    theirs = treelite.gtil.predict(to_treelite(forest), x).reshape(-1)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12)


def _edit(path: Path, target: Path, change: Any) -> Path:
    """Copy a bundle, applying change(name, json) to each model.json."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("model.json"):
                data = json.dumps(change(item.filename, json.loads(data))).encode()
            out.writestr(item, data)
    return target


def _scaler(name: str, model: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    return model | update if model["op"] == "standard_scaler" else model


def test_an_unsupported_op_is_refused_by_name(synthetic: dict[str, Any], tmp_path: Path) -> None:
    _, path = synthetic["models"][("logistic_regression", "classification")]
    edited = _edit(path, tmp_path / "pca.zip", lambda n, m: _scaler(n, m, {"op": "pca"}))
    with pytest.raises(BundleError, match=r"uses op 'pca', which the runtime does not support"):
        build_program(read_bundle(edited))


def test_an_unknown_attribute_is_refused_by_name(synthetic: dict[str, Any], tmp_path: Path) -> None:
    _, path = synthetic["models"][("logistic_regression", "classification")]

    def add(name: str, model: dict[str, Any]) -> dict[str, Any]:
        extra = {"attributes": model["attributes"] | {"with_outliers": {"boolean": True}}}
        return _scaler(name, model, extra)

    with pytest.raises(BundleError, match=r"standard_scaler.*attribute\(s\) with_outliers"):
        build_program(read_bundle(_edit(path, tmp_path / "attr.zip", add)))


def test_a_multiclass_model_without_its_matrix_and_row_dropping_policy_are_refused(
    synthetic: dict[str, Any], tmp_path: Path
) -> None:
    _, path = synthetic["models"][("logistic_regression", "classification")]

    def three_classes(name: str, model: dict[str, Any]) -> dict[str, Any]:
        if model["op"] == "logistic_regression":
            model["attributes"]["num_classes"] = {"long": 3}
        return model

    # Multinomial logistic regression reads Spark's coefficient_matrix (tests/test_bundle_ops.py).
    with pytest.raises(BundleError, match="lacks the attribute 'coefficient_matrix'"):
        build_program(read_bundle(_edit(path, tmp_path / "multi.zip", three_classes)))

    def skip(name: str, model: dict[str, Any]) -> dict[str, Any]:
        if model["op"] == "string_indexer":
            model["attributes"]["handle_invalid"] = {"string": "skip"}
        return model

    with pytest.raises(BundleError, match="handle_invalid 'skip' is not supported"):
        build_program(read_bundle(_edit(path, tmp_path / "skip.zip", skip)))


def test_a_bundle_folder_reads_like_its_zip(synthetic: dict[str, Any], tmp_path: Path) -> None:
    _, path = synthetic["models"][("decision_tree", "classification")]
    shutil.unpack_archive(path, tmp_path / "unzipped", "zip")
    held_out = synthetic["held_out"]
    from_zip = cpu(read_bundle(path)).score(held_out).column("score")
    from_folder = cpu(read_bundle(tmp_path / "unzipped")).score(held_out).column("score")
    assert from_zip.equals(from_folder)


def test_bad_batches_are_refused_with_the_column(synthetic: dict[str, Any]) -> None:
    _, path = synthetic["models"][("random_forest", "classification")]
    plan = cpu(read_bundle(path))
    held_out = synthetic["held_out"]
    with pytest.raises(ScoringError, match="no column 'tenure_months'"):
        plan.score(held_out.drop_columns(["tenure_months"]))
    as_text = held_out.set_column(
        held_out.schema.get_field_index("age"), "age", held_out.column("age").cast(pa.string())
    )
    with pytest.raises(ScoringError, match="column 'age' is string; the model wants numbers"):
        plan.score(as_text)


def test_a_broken_bundle_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="cannot open bundle"):
        read_bundle(tmp_path / "junk.zip")
