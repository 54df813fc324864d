"""Write a fitted `jobs.modeling` pipeline as an MLeap Bundle.ML, with the `mleap` package.

MLeap cannot one-hot raw strings, so each categorical feature becomes a `string_indexer` (the
contract's values as labels, unknown or missing kept as one extra index) followed by a
`one_hot_encoder` on that index whose extra slot is dropped: the all-zero encoding scikit-learn's
`handle_unknown="ignore"` gives. Numeric features get one `imputer` each (MLeap imputes scalars),
then a `vector_assembler`, then a `standard_scaler` for linear models. The model node is written
by mleap's own serializer where it is right for current scikit-learn (logistic regression, trees,
forests); linear regression and the preprocessing nodes use mleap's generic node writer, because
its scikit-learn serializers assume older attributes (a 2-D `coef_`, `sqrt(var_)` for scale).

Multiclass models take MLeap's multiclass forms as mleap writes them: a multinomial logistic
regression's `coefficient_matrix` (classes x features) and `intercept_vector`, a tree's leaves
with one value per class. An XGBoost or LightGBM model becomes the booster node of
`jobs.bundle.boosters` (MLeap's XGBoost form) over the assembled features.
"""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from jobs.bundle.boosters import BoosterKind, BoosterNode
from jobs.bundle.format import METADATA_FILE, BundleError
from jobs.bundle.mleap_nodes import GenericNode, input_shapes
from jobs.bundle.thresholds import float32_at_most_as_double

# Under their former names as well, which jobs.bundle.boosters imports from here.
FEATURES = "features"
PREDICTION = "prediction"
PROBABILITY = "probability"
TREE_OPS = (
    "decision_tree_classifier",
    "decision_tree_regression",
    "random_forest_classifier",
    "random_forest_regression",
)


def _mleap() -> Any:
    # Importing mleap's scikit-learn modules attaches its serializers to scikit-learn classes.
    # Imported when a bundle is written, and in this order: the serializer works on the
    # scikit-learn classes the modules above have patched.
    for module in ("pipeline", "logistic", "tree.tree", "ensemble.forest"):
        importlib.import_module(f"mleap.sklearn.{module}")
    from mleap.bundle.serialize import MLeapSerializer  # only after the patching above

    return MLeapSerializer


def export_bundle(pipeline: Pipeline, path: Path, name: str, metadata: dict[str, Any]) -> Path:
    """Write `pipeline` to the zip file `path`; returns it. `metadata` goes to precompute.json."""
    serializer = _mleap()
    prepare = pipeline.named_steps["prepare"]
    model = copy.deepcopy(pipeline.named_steps["model"])  # mleap sets attributes on it
    nodes: list[Any] = []
    blocks: list[tuple[str, int]] = []  # assembled vector inputs and their widths
    feature_names: list[str] = []

    def node(op: str, inputs: list[str], output: str, attributes: list[tuple[str, Any]]) -> None:
        nodes.append(GenericNode(serializer, op, f"{op}_{len(nodes)}", inputs, output, attributes))

    for block, transformer, columns in prepare.transformers_:
        if block == "numeric":
            imputer = transformer.named_steps["impute"]
            imputed = []
            for column, surrogate in zip(columns, imputer.statistics_, strict=True):
                imputed.append(f"{column}__imputed")
                node(
                    "imputer",
                    [column],
                    imputed[-1],
                    [("strategy", "mean"), ("surrogate_value", float(surrogate))],
                )
            vector = "numeric__vector"
            node(
                "vector_assembler",
                imputed,
                vector,
                [("input_shapes", input_shapes([1] * len(imputed)))],
            )
            scaler = transformer.named_steps.get("scale")
            if scaler is not None:
                node(
                    "standard_scaler",
                    [vector],
                    "numeric__scaled",
                    [("mean", np.asarray(scaler.mean_)), ("std", np.asarray(scaler.scale_))],
                )
                vector = "numeric__scaled"
            blocks.append((vector, len(columns)))
            feature_names += list(columns)
        elif block == "categorical":
            for column, labels in zip(columns, transformer.categories_, strict=True):
                values = [str(v) for v in labels]
                node(
                    "string_indexer",
                    [column],
                    f"{column}__index",
                    [("labels", values), ("handle_invalid", "keep"), ("nullable_input", True)],
                )
                node(
                    "one_hot_encoder",
                    [f"{column}__index"],
                    f"{column}__onehot",
                    [("size", len(values)), ("handle_invalid", "keep"), ("drop_last", True)],
                )
                blocks.append((f"{column}__onehot", len(values)))
                feature_names += [f"{column}={v}" for v in values]
        elif block != "remainder":
            raise BundleError(f"cannot export pipeline block {block!r}")
    node(
        "vector_assembler",
        [b for b, _ in blocks],
        FEATURES,
        [("input_shapes", input_shapes([w for _, w in blocks], tensor=True))],
    )
    op = getattr(model, "op", None)
    if isinstance(model, LinearRegression):
        node(
            "linear_regression",
            [FEATURES],
            PREDICTION,
            [
                ("coefficients", np.asarray(model.coef_).ravel()),
                ("intercept", float(model.intercept_)),
            ],
        )
    elif op in ("logistic_regression", *TREE_OPS):
        # mleap's own serializers write these; trees also need the assembled features' names.
        names = {"feature_names": feature_names} if op in TREE_OPS else {}
        model.mlinit(input_features=FEATURES, prediction_column=PREDICTION, **names)
        model.name = f"{op}_{len(nodes)}"
        for tree in getattr(model, "estimators_", [model]) if op in TREE_OPS else []:
            cuts = tree.tree_.threshold  # a writable view of the copied tree's nodes
            internal = tree.tree_.feature >= 0
            cuts[internal] = [float32_at_most_as_double(t) for t in cuts[internal]]
        classifier = op == "logistic_regression" or op.endswith("classifier")
        nodes.append(_ModelPorts(model, classifier))
    elif (kind := _booster_kind(model)) is not None:
        nodes.append(BoosterNode(kind, _booster_model(kind, model), f"{kind}_{len(nodes)}"))
    else:
        raise BundleError(f"cannot export a {type(model).__name__} model")

    bundle = Pipeline([(n.name, n) for n in nodes])
    bundle.name = name
    with tempfile.TemporaryDirectory() as scratch:
        bundle.serialize_to_bundle(scratch, name, init=True)
        with zipfile.ZipFile(f"{scratch}/{name}.zip", "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f"{scratch}/{name}.zip", path)
    return path


def _booster_kind(model: Any) -> BoosterKind | None:
    """Which booster library's scikit-learn estimator `model` is; None for other models."""
    library = type(model).__module__.split(".")[0]
    if library == "xgboost":
        return "xgboost"
    if library == "lightgbm":
        return "lightgbm"
    return None


def _booster_model(kind: BoosterKind, model: Any) -> bytes:
    """The fitted estimator's model file: XGBoost's UBJSON, LightGBM's text model."""
    if kind == "xgboost":
        return bytes(model.get_booster().save_raw("ubj"))
    return str(model.booster_.model_to_string()).encode()


class _ModelPorts:
    """mleap's own writer for a model node, with the outputs MLeap's runtime makes for it:
    `prediction`, and `probability` for a classifier (MLeap computes the probabilities only
    when that port is declared; mleap declares none for logistic regression and decision trees,
    and declares `raw_prediction` and `probability` on a forest regressor, which has neither)."""

    serializable = True

    def __init__(self, model: Any, classifier: bool) -> None:
        self.model, self.op, self.name, self.classifier = model, model.op, model.name, classifier

    def serialize_to_bundle(self, path: str, model_name: str) -> None:
        self.model.serialize_to_bundle(path, model_name)
        coefficients = np.asarray(getattr(self.model, "coef_", np.zeros((1, 0))))
        if self.op == "logistic_regression" and coefficients.shape[0] > 1:
            # MLeap reads a matrix's values column-major (Spark's DenseMatrix); mleap writes
            # coef_ row-major, which would swap classes and features.
            model_file = Path(path, f"{model_name}.node", "model.json")
            written = json.loads(model_file.read_text())
            matrix = written["attributes"]["coefficient_matrix"]
            matrix["double"] = coefficients.ravel(order="F").tolist()
            model_file.write_text(json.dumps(written, indent=3))
        shape_file = Path(path, f"{model_name}.node", "node.json")
        shape = json.loads(shape_file.read_text())
        shape["shape"]["outputs"] = [{"name": PREDICTION, "port": "prediction"}]
        if self.classifier:
            shape["shape"]["outputs"].append({"name": PROBABILITY, "port": "probability"})
        shape_file.write_text(json.dumps(shape, indent=3))
