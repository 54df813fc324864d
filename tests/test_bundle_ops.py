"""The Spark ML and scikit-learn transformer ops and multinomial logistic regression: bundles as
MLeap on Spark ML and the `mleap` package write them (tests/bundle_fixtures.py) score as MLeap's
own JVM runtime scores them and as scikit-learn/numpy compute them; what the runtime cannot
score is refused with the node named.

The GPU backend's code path runs here with numpy standing in for CuPy (no GPU on this machine).
MLeap's JVM runtime is 0.20.0, which refuses a multi-column string indexer ("Multi-input
StringIndexer not supported yet"), so that form is checked against numpy only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from bundle_fixtures import (
    Fixture,
    SparkNode,
    customers,
    double,
    doubles,
    integer,
    integers,
    long,
    sklearn_pipeline,
    spark_binary,
    spark_gbt,
    spark_multiclass,
    spark_regression,
    string,
    strings,
    tensor,
    write_bundle,
)

from jobs.bundle.backends import Backend, gpu_available, gpu_backend
from jobs.bundle.format import BundleError, read_bundle
from jobs.bundle.mleap_check import TOLERANCE, UNSEEN, mleap_scores, with_edge_rows
from jobs.bundle.program import build_program, polynomial_terms
from jobs.bundle.runtime import ScoringError, compile_bundle
from jobs.bundle.trees import array_kernel
from precompute.settings import Settings

# The GBT fixtures are scored by our runtime once the `trees` branch adds their ops.
GBT_FIXTURES = ["spark_gbt_classifier", "spark_gbt_regression"]
FIXTURES = [
    "spark_multiclass",
    "spark_binary",
    "spark_regression",
    "sklearn_binary",
    "sklearn_multiclass",
    *GBT_FIXTURES,
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fixture]:
    folder = tmp_path_factory.mktemp("fixtures")
    train = customers(3000, seed=1)
    return {
        "spark_multiclass": spark_multiclass(folder, train),
        "spark_binary": spark_binary(folder, train),
        "spark_regression": spark_regression(folder, train),
        "spark_gbt_classifier": spark_gbt(folder, train, classifier=True),
        "spark_gbt_regression": spark_gbt(folder, train, classifier=False),
        "sklearn_binary": sklearn_pipeline(folder, train, classes=2),
        "sklearn_multiclass": sklearn_pipeline(folder, train, classes=3),
    }


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return customers(400, seed=2)


def values(path: Path, rows: pa.Table, backend: Backend | None = None) -> Any:
    return compile_bundle(
        read_bundle(path), "cpu", entity_id="customer_id", backend=backend
    ).values(rows)


@pytest.fixture(scope="module")
def mleaps(
    fixtures: dict[str, Fixture], rows: pa.Table, settings: Settings
) -> dict[str, tuple[pa.Table, Any]]:
    """Each fixture's rows (with the edge rows: missing values, unseen categories, where the
    runtime reads the bundle) and MLeap's scores for them, from one JVM run for all."""
    checks: dict[str, tuple[pa.Table, list[tuple[str, str]]]] = {}
    for name, fixture in fixtures.items():
        bundle = read_bundle(fixture.path)
        inputs = [(i.name, str(i.kind)) for i in build_program(bundle).inputs]
        checks[name] = (with_edge_rows(rows, bundle), inputs)
    paths = [(fixtures[name].path, table) for name, (table, _) in checks.items()]
    theirs = mleap_scores(paths, settings, [columns for _, columns in checks.values()])
    return {name: (checks[name][0], score) for name, score in zip(checks, theirs, strict=True)}


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_scores_the_same_in_mleaps_jvm_runtime(
    fixtures: dict[str, Fixture], mleaps: dict[str, tuple[pa.Table, Any]], name: str
) -> None:
    table, theirs = mleaps[name]
    assert table.num_rows == 402  # 400 rows and the two edge rows
    np.testing.assert_allclose(values(fixtures[name].path, table), theirs, rtol=0, atol=TOLERANCE)


def test_edge_rows_hold_missing_values_and_unseen_categories(
    mleaps: dict[str, tuple[pa.Table, Any]],
) -> None:
    table, _ = mleaps["spark_multiclass"]
    assert table.column("age").to_pylist()[-2] is None
    assert table.column("visits").to_pylist()[-2] is None
    assert table.column("plan").to_pylist()[-1] == UNSEEN


@pytest.mark.parametrize("name", GBT_FIXTURES)
def test_spark_gbt_fixture_scores_in_mleaps_jvm_as_scikit_learn(
    fixtures: dict[str, Fixture], mleaps: dict[str, tuple[pa.Table, Any]], rows: pa.Table, name: str
) -> None:
    """The fixture itself is right: MLeap's runtime gives scikit-learn's answer (relative for
    the regressor, whose predictions are near 40 and sum 13 trees)."""
    _, theirs = mleaps[name]
    expected = fixtures[name].expected(rows)
    np.testing.assert_allclose(theirs[: rows.num_rows], expected, rtol=1e-13, atol=TOLERANCE)


@pytest.mark.parametrize("name", GBT_FIXTURES)
def test_spark_gbt_fixture_scores_as_scikit_learn_in_our_runtime(
    fixtures: dict[str, Fixture], rows: pa.Table, name: str
) -> None:
    """Runs once the `trees` branch's gbt_classifier/gbt_regression ops are merged; the JVM
    parity above covers these fixtures then too."""
    np.testing.assert_allclose(
        values(fixtures[name].path, rows), fixtures[name].expected(rows), rtol=1e-13, atol=TOLERANCE
    )


def test_spark_multiclass_pipeline_gives_scikit_learns_class_probabilities(
    fixtures: dict[str, Fixture], rows: pa.Table
) -> None:
    fixture = fixtures["spark_multiclass"]
    ours = values(fixture.path, rows)
    assert ours.shape == (rows.num_rows, 3)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, fixture.expected(rows), rtol=0, atol=TOLERANCE)
    assert rows.column("age").null_count > 0  # the imputers had work to do


def test_spark_binary_pipeline_gives_the_positive_class_probability(
    fixtures: dict[str, Fixture], rows: pa.Table
) -> None:
    fixture = fixtures["spark_binary"]
    ours = values(fixture.path, rows)
    assert ours.shape == (rows.num_rows,)
    np.testing.assert_allclose(ours, fixture.expected(rows), rtol=0, atol=TOLERANCE)
    assert compile_bundle(read_bundle(fixture.path), "cpu", entity_id="x").program.threshold == 0.4


def test_spark_polynomial_expansion_regression_gives_scikit_learns_prediction(
    fixtures: dict[str, Fixture], rows: pa.Table
) -> None:
    fixture = fixtures["spark_regression"]
    ours = values(fixture.path, rows)
    expected = fixture.expected(rows)
    # Products of values near 100 and a prediction near 40: a few ulps of each, relative.
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=TOLERANCE)


def test_polynomial_terms_follow_sparks_order() -> None:
    # Spark's documentation: (x, y) of degree 2 expands to (x, x*x, y, x*y, y*y).
    assert polynomial_terms(2, 2) == ((0,), (0, 0), (1,), (1, 0), (1, 1))
    assert len(polynomial_terms(4, 3)) == math.comb(4 + 3, 3) - 1


def test_mleap_package_binary_pipeline_scores_as_scikit_learn(
    fixtures: dict[str, Fixture], rows: pa.Table
) -> None:
    fixture = fixtures["sklearn_binary"]
    np.testing.assert_allclose(
        values(fixture.path, rows), fixture.expected(rows), rtol=0, atol=TOLERANCE
    )


def test_mleap_package_multiclass_matrix_is_read_column_major_as_mleaps_runtime_reads_it(
    fixtures: dict[str, Fixture], rows: pa.Table
) -> None:
    """mleap's Python serializer writes coef_ row-major; MLeap (and Spark) read a matrix
    column-major, so MLeap scores such a bundle with shuffled coefficients. The runtime scores
    what MLeap scores (checked in the JVM test above), which is not scikit-learn's answer."""
    fixture = fixtures["sklearn_multiclass"]
    ours = values(fixture.path, rows)
    assert np.abs(ours - fixture.expected(rows)).max() > 0.01


@pytest.mark.parametrize("name", FIXTURES)
def test_gpu_code_path_with_numpy_standing_in_gives_the_same_values(
    fixtures: dict[str, Fixture], rows: pa.Table, name: str
) -> None:
    path = fixtures[name].path
    stand_in = Backend("array", np, lambda f: array_kernel(f, np, 997))
    np.testing.assert_array_equal(values(path, rows, stand_in), values(path, rows))


@pytest.mark.gpu
@pytest.mark.parametrize("name", FIXTURES)
def test_gpu_backend_gives_the_cpu_values(
    fixtures: dict[str, Fixture], rows: pa.Table, name: str
) -> None:
    if not gpu_available():
        pytest.skip("no CUDA device visible to CuPy on this machine")
    path = fixtures[name].path
    np.testing.assert_allclose(
        values(path, rows, gpu_backend()), values(path, rows), rtol=1e-12, atol=TOLERANCE
    )


# -- one op at a time ---------------------------------------------------------------------


def probe(tmp_path: Path, nodes: list[SparkNode], vector: str, width: int, table: pa.Table) -> Any:
    """The `vector` column the nodes build, read back through one linear regression per
    feature (coefficients e_j): the runtime's steps, seen only through the model's output."""
    out = []
    for j in range(width):
        model = SparkNode(
            "linreg",
            "linear_regression",
            {"coefficients": tensor(np.eye(width)[j]), "intercept": double(0.0)},
            [(vector, "features")],
            [("prediction", "prediction")],
        )
        path = write_bundle(tmp_path / f"probe{j}.zip", "probe", [*nodes, model])
        plan = compile_bundle(read_bundle(path), "cpu", entity_id="id", fold=False)
        out.append(plan.values(table))
    return np.column_stack(out)


def assemble(columns: list[str], target: str = "features") -> SparkNode:
    return SparkNode(
        f"vecAssembler_{target}",
        "vector_assembler",
        {},
        [(c, f"input{i}") for i, c in enumerate(columns)],
        [(target, "output")],
    )


def test_multi_column_string_indexer_indexes_each_column_with_its_own_labels(
    tmp_path: Path,
) -> None:
    indexer = SparkNode(
        "strIdx",
        "string_indexer",
        {
            "labels_length": integer(2),
            "handle_invalid": string("keep"),
            "labels_array_0": strings(["b", "a"]),
            "labels_array_1": strings(["x", "y", "z"]),
        },
        [("left", "input0"), ("right", "input1")],
        [("left_i", "output0"), ("right_i", "output1")],
    )
    table = pa.table({"id": ["1", "2", "3"], "left": ["a", "b", None], "right": ["z", "q", "x"]})
    got = probe(tmp_path, [indexer, assemble(["left_i", "right_i"])], "features", 2, table)
    np.testing.assert_array_equal(got, [[1, 2], [0, 3], [2, 0]])


def test_multi_column_one_hot_encoder_encodes_each_column_with_its_size(tmp_path: Path) -> None:
    encoder = SparkNode(
        "ohe",
        "one_hot_encoder",
        {"category_sizes": integers([3, 2]), "drop_last": {}, "handle_invalid": string("keep")},
        [("a", "input0"), ("b", "input1")],
        [("a_vec", "output0"), ("b_vec", "output1")],
    )
    table = pa.table({"id": ["1", "2"], "a": [2.0, 7.0], "b": [0.0, 1.0]})
    got = probe(tmp_path, [encoder, assemble(["a_vec", "b_vec"])], "features", 7, table)
    # drop_last false ({} is MLeap's false), keep: 3 + 1 and 2 + 1 slots; 7 is the invalid slot.
    np.testing.assert_array_equal(got, [[0, 0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 1, 0]])


def test_scalers_and_normalizer_follow_mleaps_formulas(tmp_path: Path) -> None:
    x = np.array([[1.0, -4.0, 5.0], [3.0, 2.0, 5.0], [9.0, 8.0, 5.0]])
    table = pa.table({"id": ["1", "2", "3"], **{f"x{j}": x[:, j] for j in range(3)}})
    nodes = [
        assemble(["x0", "x1", "x2"], "raw"),
        SparkNode(
            "minmax",
            "min_max_scaler",
            {"min": tensor([1, -4, 5]), "max": tensor([5, 8, 5]), "minValue": double(-1.0)},
            [("raw", "input")],
            [("mm", "output")],
        ),
        SparkNode(
            "maxabs",
            "max_abs_scaler",
            {"maxAbs": tensor([4, 0, 2])},
            [("raw", "input")],
            [("ma", "output")],
        ),
        SparkNode(
            "norm",
            "normalizer",
            {"p_norm": double(1.0), "input_size": integer(3)},
            [("raw", "input")],
            [("n1", "output")],
        ),
        assemble(["mm", "ma", "n1"]),
    ]
    got = probe(tmp_path, nodes, "features", 9, table)
    # min-max to [-1, 1]; a constant feature (span 0) gives 0.5 scaled: 0.5 * 2 - 1 = 0.
    minmax = np.column_stack([(x[:, 0] - 1) / 4 * 2 - 1, (x[:, 1] + 4) / 12 * 2 - 1, np.zeros(3)])
    maxabs = np.clip(x / np.array([4.0, 1.0, 2.0]), -1, 1)  # a zero max_abs divides by 1
    unit = x / np.abs(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.hstack([minmax, maxabs, unit]), rtol=0, atol=1e-15)


def bucketizer(handle_invalid: str = "error") -> SparkNode:
    return SparkNode(
        "bucketizer_income",
        "bucketizer",
        {"splits": doubles([-np.inf, 0.0, 10.0, 20.0]), "handle_invalid": string(handle_invalid)},
        [("income", "input")],
        [("bucket", "output")],
    )


def test_bucketizer_puts_each_split_in_the_bucket_it_opens_and_the_last_in_the_last(
    tmp_path: Path,
) -> None:
    table = pa.table({"id": list("abcdef"), "income": [-1e9, 0.0, 9.99, 10.0, 15.0, 20.0]})
    got = probe(tmp_path, [bucketizer(), assemble(["bucket"])], "features", 1, table)
    np.testing.assert_array_equal(got[:, 0], [0, 1, 1, 2, 2, 2])


def test_bucketizer_refuses_a_row_above_its_last_split_naming_the_column(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b"], "income": [5.0, 20.5]})
    with pytest.raises(ScoringError, match=r"column 'income' holds 20.5, outside .*\[-inf, 20.0\]"):
        probe(tmp_path, [bucketizer("keep"), assemble(["bucket"])], "features", 1, table)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (bucketizer("skip"), r"'bucketizer_income' \(bucketizer\): handle_invalid 'skip'"),
        (
            SparkNode(
                "bucketizer_multi",
                "bucketizer",
                {"splits_array": doubles([0, 1, 2]), "handle_invalid": string("error")},
                [("income", "input")],
                [("bucket", "output")],
            ),
            r"'bucketizer_multi' \(bucketizer\) has attribute\(s\) splits_array",
        ),
        (
            SparkNode(
                "binarizer_multi",
                "binarizer",
                {"thresholds": doubles([0.5]), "threshold": double(0.5)},
                [("income", "input")],
                [("bucket", "output")],
            ),
            r"'binarizer_multi' \(binarizer\) has attribute\(s\) thresholds",
        ),
        (
            SparkNode(
                "strIdx_skip",
                "string_indexer",
                {
                    "labels_length": integer(1),
                    "labels_array_0": strings(["a"]),
                    "handle_invalid": string("skip"),
                },
                [("region", "input")],
                [("bucket", "output")],
            ),
            r"'strIdx_skip' \(string_indexer\): handle_invalid 'skip'",
        ),
        (
            SparkNode(
                "strIdx_two",
                "string_indexer",
                {
                    "labels_length": integer(1),
                    "labels_array_0": strings(["a"]),
                    "labels_array_1": strings(["b"]),
                },
                [("region", "input")],
                [("bucket", "output")],
            ),
            r"'strIdx_two' \(string_indexer\) has attribute\(s\) labels_array_1",
        ),
    ],
)
def test_unsupported_policies_and_attributes_are_refused_naming_the_node(
    tmp_path: Path, node: SparkNode, message: str
) -> None:
    path = write_bundle(tmp_path / "b.zip", "b", [node, *model_after("bucket", 1)])
    with pytest.raises(BundleError, match=message):
        compile_bundle(read_bundle(path), "cpu", entity_id="id")


def model_after(column: str, width: int, scalar: bool = True) -> list[SparkNode]:
    nodes = [assemble([column])] if scalar else []
    source = "features" if scalar else column
    return [
        *nodes,
        SparkNode(
            "linreg",
            "linear_regression",
            {"coefficients": tensor(np.ones(width)), "intercept": {}},
            [(source, "features")],
            [("prediction", "prediction")],
        ),
    ]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            SparkNode(
                "minMax",
                "min_max_scaler",
                {"min": tensor([0, 0]), "max": tensor([1, 1, 1])},
                [("raw", "input")],
                [("out", "output")],
            ),
            r"'minMax' \(min_max_scaler\): min has 2 values for 3 features",
        ),
        (
            SparkNode(
                "norm",
                "normalizer",
                {"p_norm": double(2.0), "input_size": integer(4)},
                [("raw", "input")],
                [("out", "output")],
            ),
            r"'norm' \(normalizer\): input_size 4, but its input 'raw' has 3 features",
        ),
        (
            SparkNode(
                "logreg",
                "logistic_regression",
                {
                    "num_classes": long(3),
                    "coefficient_matrix": tensor(np.ones((3, 2))),
                    "intercept_vector": tensor([0, 0, 0]),
                },
                [("raw", "features")],
                [("prediction", "prediction")],
            ),
            r"'logreg' \(logistic_regression\): coefficient_matrix is 3x2, expected 3x3",
        ),
    ],
)
def test_sizes_that_do_not_line_up_are_refused_naming_the_node(
    tmp_path: Path, node: SparkNode, message: str
) -> None:
    nodes = [assemble(["a", "b", "c"], "raw"), node]
    if node.op != "logistic_regression":
        nodes += model_after("out", 3, scalar=False)
    path = write_bundle(tmp_path / "b.zip", "b", nodes)
    with pytest.raises(BundleError, match=message):
        compile_bundle(read_bundle(path), "cpu", entity_id="id")


def test_one_hot_encoder_with_more_sizes_than_ports_is_refused_naming_the_node(
    tmp_path: Path,
) -> None:
    encoder = SparkNode(
        "ohe_sizes",
        "one_hot_encoder",
        {"category_sizes": integers([3, 2]), "drop_last": {}, "handle_invalid": string("error")},
        [("a", "input0")],
        [("a_vec", "output0")],
    )
    path = write_bundle(tmp_path / "b.zip", "b", [encoder, *model_after("a_vec", 3, scalar=False)])
    with pytest.raises(BundleError, match=r"'ohe_sizes' \(one_hot_encoder\) has 2 column\(s\)"):
        compile_bundle(read_bundle(path), "cpu", entity_id="id")


def test_unknown_category_is_refused_when_the_encoder_refuses_it_folded_or_not(
    tmp_path: Path,
) -> None:
    """An indexer that keeps unknowns, then an encoder of size len(labels) that refuses them:
    MLeap fails such a row ("Unseen value"), and so do both the folded and the stepwise plan."""
    nodes = [
        SparkNode(
            "strIdx_keep",
            "string_indexer",
            {"labels": strings(["a", "b"]), "handle_invalid": string("keep")},
            [("region", "input")],
            [("region_i", "output")],
        ),
        SparkNode(
            "ohe_error",
            "one_hot_encoder",
            {"size": long(2), "drop_last": {}, "handle_invalid": string("error")},
            [("region_i", "input")],
            [("region_vec", "output")],
        ),
        assemble(["region_vec"]),
        SparkNode(
            "logreg",
            "logistic_regression",
            {"coefficients": tensor([0.5, -0.5]), "intercept": double(0.1), "num_classes": long(2)},
            [("features", "features")],
            [("probability", "probability")],
        ),
    ]
    bundle = read_bundle(write_bundle(tmp_path / "b.zip", "b", nodes))
    table = pa.table({"id": ["1", "2"], "region": ["a", "zzz"]})
    for fold in (True, False):
        plan = compile_bundle(bundle, "cpu", entity_id="id", fold=fold)
        np.testing.assert_allclose(plan.values(table.slice(0, 1)), [1 / (1 + np.exp(-0.6))])
        with pytest.raises(ScoringError, match="region"):
            plan.values(table)
