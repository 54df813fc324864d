"""XGBoost and LightGBM boosters as MLeap bundle nodes: what a model file holds, and writing one.

XGBoost models use MLeap's own form (mleap-xgboost-runtime's `XGBoostClassificationOp` and
`XGBoostRegressionOp`): op `xgboost.classifier` or `xgboost.regression`, int attributes
`num_features`, `num_classes` (classifier only) and `tree_limit` (0: every tree), the booster in
the node's file `xgboost.model`, input port `features`. MLeap loads that file with xgboost4j's
`XGBoost.loadModel`, which reads XGBoost's JSON and UBJSON; we store UBJSON, the form xgboost4j's
own `saveModel` writes. MLeap has no LightGBM op, so LightGBM models get ops of our own in the
same form: `lightgbm.classifier` / `lightgbm.regression`, the text model in `lightgbm.model`.
MLeap's JVM cannot score those; this project's runtime scores both kinds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jobs.bundle.format import METADATA_FILE, MODEL_FILES, BundleError
from jobs.bundle.mleap_nodes import GenericNode, input_shapes
from jobs.bundle.treelite_forest import forest_from_treelite
from jobs.bundle.trees import Forest

BoosterKind = Literal["xgboost", "lightgbm"]
BOOSTER_OPS: dict[str, tuple[BoosterKind, bool]] = {  # op -> (kind, classifier)
    "xgboost.classifier": ("xgboost", True),
    "xgboost.regression": ("xgboost", False),
    "lightgbm.classifier": ("lightgbm", True),
    "lightgbm.regression": ("lightgbm", False),
}
FEATURES = "features"


@dataclass(frozen=True)
class BoosterFacts:
    """What a booster's model file says about itself."""

    kind: BoosterKind
    num_features: int
    num_classes: int  # 0 regression, 2 binary, K classes
    task: Literal["classification", "regression"]
    objective: str
    feature_names: list[str] | None


def booster_facts(kind: BoosterKind, model: bytes) -> BoosterFacts:
    """Read a model file's facts; a file that is not such a model is refused in one line."""
    if kind == "xgboost":
        return _xgboost_facts(model)
    if kind == "lightgbm":
        return _lightgbm_facts(model)
    raise BundleError(f"booster kind {kind!r} is not 'xgboost' or 'lightgbm'")


def xgboost_booster(model: bytes) -> Any:
    """An xgboost.Booster from JSON, UBJSON or legacy binary bytes."""
    # xgboost and lightgbm are imported where a booster is read: most bundles need neither.
    import xgboost

    try:
        return xgboost.Booster(model_file=bytearray(model))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"the file is not an XGBoost model: {first}") from exc


def lightgbm_booster(model: bytes) -> Any:
    """A lightgbm.Booster from LightGBM's text model."""
    import lightgbm  # see xgboost_booster

    try:
        text = model.decode()
    except UnicodeDecodeError as exc:
        raise BundleError("the file is not a LightGBM text model: it is not UTF-8 text") from exc
    if not text.startswith("tree\n"):
        raise BundleError("the file is not a LightGBM text model: it does not start with 'tree'")
    try:
        return lightgbm.Booster(model_str=text)
    except lightgbm.basic.LightGBMError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"the file is not a LightGBM model: {first}") from exc


def xgboost_json(model: bytes) -> str:
    """The booster as XGBoost's JSON text (treelite reads it)."""
    if model[:1] == b"{" and model[1:2] in (b'"', b" ", b"\n", b"\r", b"\t"):
        return model.decode()
    return bytes(xgboost_booster(model).save_raw("json")).decode()


def _xgboost_facts(model: bytes) -> BoosterFacts:
    booster = xgboost_booster(model)
    config = json.loads(booster.save_config())["learner"]
    objective = str(config["objective"]["name"])
    classes = int(config["learner_model_param"].get("num_class", "0") or 0)
    if objective.startswith("binary:"):
        num_classes = 2
    elif objective.startswith("multi:"):
        num_classes = classes
    else:
        num_classes = 0
    names = booster.feature_names
    return BoosterFacts(
        kind="xgboost",
        num_features=int(booster.num_features()),
        num_classes=num_classes,
        task="classification" if num_classes else "regression",
        objective=objective,
        feature_names=list(names) if names else None,
    )


def _lightgbm_facts(model: bytes) -> BoosterFacts:
    booster = lightgbm_booster(model)
    dump = booster.dump_model(num_iteration=0)
    objective = str(dump.get("objective", "")).split(" ")[0]
    if objective in ("binary", "cross_entropy", "cross_entropy_lambda"):
        num_classes = 2 if objective == "binary" else 0
    elif objective in ("multiclass", "multiclassova"):
        num_classes = int(dump["num_class"])
    else:
        num_classes = 0
    names = list(booster.feature_name())
    generated = names == [f"Column_{i}" for i in range(len(names))]
    return BoosterFacts(
        kind="lightgbm",
        num_features=int(booster.num_feature()),
        num_classes=num_classes,
        task="classification" if num_classes else "regression",
        objective=objective,
        feature_names=None if generated else names,
    )


def stored_model(kind: BoosterKind, model: bytes) -> bytes:
    """The bytes the bundle stores: UBJSON for XGBoost (what xgboost4j's saveModel writes and
    loadModel reads), LightGBM's text model as given."""
    if kind == "xgboost":
        return bytes(xgboost_booster(model).save_raw("ubj"))
    lightgbm_booster(model)  # refuses a file that is not a model
    return model


class BoosterNode:
    """A booster as a node of the `mleap` package's Pipeline serialisation (op, name,
    `serialize_to_bundle`), written in MLeap's XGBoost form (see the module docstring)."""

    serializable = True

    def __init__(self, kind: BoosterKind, model: bytes, name: str, features: str = FEATURES):
        self.facts = booster_facts(kind, model)
        self.kind = kind
        self.model = stored_model(kind, model)
        self.classifier = self.facts.task == "classification"
        self.op = f"{kind}.{'classifier' if self.classifier else 'regression'}"
        self.name = name
        self.features = features

    def attributes(self) -> dict[str, Any]:
        # MLeap's op reads these with getInt: Bundle.ML JSON spells a 32-bit int as "int".
        values = {"num_features": self.facts.num_features, "tree_limit": 0}
        if self.classifier:
            values["num_classes"] = self.facts.num_classes
        return {key: {"int": value} for key, value in values.items()}

    def outputs(self) -> list[dict[str, str]]:
        ports = ["raw_prediction", "probability", "prediction"] if self.classifier else []
        return [{"name": port, "port": port} for port in ports or ["prediction"]]

    def serialize_to_bundle(self, path: str, model_name: str) -> None:
        folder = Path(path, f"{model_name}.node")
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        model = {"op": self.op, "attributes": self.attributes()}
        (folder / "model.json").write_text(json.dumps(model, indent=3))
        shape = {"inputs": [{"name": self.features, "port": "features"}], "outputs": self.outputs()}
        (folder / "node.json").write_text(json.dumps({"name": self.name, "shape": shape}, indent=3))
        (folder / MODEL_FILES[self.op]).write_bytes(self.model)


def write_booster_bundle(
    kind: BoosterKind,
    model: bytes,
    feature_columns: list[str],
    path: Path,
    name: str,
    metadata: dict[str, Any],
) -> Path:
    """A bundle of a vector_assembler over the numeric columns, then the booster; zipped to
    `path` (returned), with `metadata` as precompute.json."""
    # The mleap package patches scikit-learn when imported: only writing a bundle needs it.
    from mleap.bundle.serialize import MLeapSerializer
    from mleap.sklearn.pipeline import Pipeline as _Patched  # noqa: F401  (adds serialisation)
    from sklearn.pipeline import Pipeline

    booster = BoosterNode(kind, model, f"{kind}_1")
    if len(feature_columns) != booster.facts.num_features:
        raise BundleError(
            f"the {kind} model has {booster.facts.num_features} features but "
            f"{len(feature_columns)} columns were named for it"
        )
    assembler = GenericNode(
        MLeapSerializer,
        "vector_assembler",
        "vector_assembler_0",
        feature_columns,
        FEATURES,
        [("input_shapes", input_shapes([1] * len(feature_columns)))],
    )
    bundle = Pipeline([(assembler.name, assembler), (booster.name, booster)])
    bundle.name = name
    with tempfile.TemporaryDirectory() as scratch:
        bundle.serialize_to_bundle(scratch, name, init=True)
        with zipfile.ZipFile(f"{scratch}/{name}.zip", "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f"{scratch}/{name}.zip", os.fspath(path))
    return path


def forest_from_booster(kind: BoosterKind, model: bytes, where: str) -> Forest:
    """The booster's trees as a Forest (through treelite), taking category codes as numbers."""
    # treelite loads scipy (over half a second): only a booster's bundle needs it here.
    import treelite

    try:
        if kind == "xgboost":
            loaded = json.loads(xgboost_json(model))
            # XGBoost 3 keeps pandas categories' values to recode data frames when predicting;
            # the trees themselves test category codes, which is what our inputs hold.
            trees = loaded["learner"]["gradient_booster"]["model"]
            _check_codes(trees.pop("cats", None) or {}, where)
            source = treelite.frontend.from_xgboost_json(json.dumps(loaded))
            base = _xgboost_logistic_base(loaded["learner"])
            blank = None
        else:
            _check_lightgbm_categories(model, where)
            source = treelite.frontend.from_lightgbm(lightgbm_booster(model))
            base = None
            blank = _lightgbm_infinite_threshold(model, where)
    except (treelite.TreeliteError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{where}: treelite cannot read the {kind} model: {first}") from exc
    forest = forest_from_treelite(source, where, blank)
    return forest if base is None else replace(forest, base=base)


def _check_codes(cats: dict[str, Any], where: str) -> None:
    """Refuse categories that are not their own codes: the trees test codes 0..n-1, and the
    runtime hands them the column's values (a model trained on pandas categories 10, 20, 30
    would read 20 as the code 20, not as the category 20)."""
    for encoded in cats.get("enc") or []:
        values = list(encoded.get("values") or [])
        if values and values != list(range(len(values))):
            shown = ", ".join(map(str, values[:5]))
            raise BundleError(
                f"{where}: the model was trained on pandas categories ({shown}, ...) that are "
                "not their codes 0..n-1; train it on the codes (what the runtime passes)"
            )


def _check_lightgbm_categories(model: bytes, where: str) -> None:
    """The same for LightGBM, which records the pandas categories it was trained on."""
    for line in model.decode(errors="replace").splitlines():
        if line.startswith("pandas_categorical:"):
            for values in json.loads(line.partition(":")[2] or "null") or []:
                if list(values) != list(range(len(values))):
                    shown = ", ".join(map(str, list(values)[:5]))
                    raise BundleError(
                        f"{where}: the model was trained on pandas categories ({shown}, ...) "
                        "that are not their codes 0..n-1; train it on the codes (what the "
                        "runtime passes)"
                    )


def _lightgbm_infinite_threshold(model: bytes, where: str) -> float | None:
    """+inf when the text model's only non-finite thresholds are `inf` (LightGBM writes that
    for a split sending every number left); treelite's dump leaves those blank."""
    odd = set()
    for line in model.decode().splitlines():
        if line.startswith("threshold="):
            odd |= {v for v in line[len("threshold=") :].split() if not np.isfinite(float(v))}
    if odd - {"inf"}:
        raise BundleError(f"{where}: LightGBM thresholds {sorted(odd)} are not supported")
    return np.inf if odd else None


def _xgboost_logistic_base(learner: dict[str, Any]) -> np.ndarray | None:
    """XGBoost's base margin for a logistic objective, which it derives in float32 from the
    base score (treelite derives it in double, which can differ in the last float32 bit)."""
    if learner["objective"]["name"] not in ("binary:logistic", "reg:logistic"):
        return None
    text = str(learner["learner_model_param"]["base_score"]).strip("[]")
    p = np.float32(float(text.split(",")[0]))
    one = np.float32(1)
    return np.asarray([-np.log(one / p - one)], np.float32).astype(np.float64)
