"""Registering models made elsewhere against a data contract: bundles the `mleap` package writes
from a user's own scikit-learn pipeline, and boosters from XGBoost's and LightGBM's model files,
on the real database; the stored version scores through our runtime as the library does."""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bundle_fixtures import user_pipeline
from conftest import airflow_env, fetch_all, run_cli, run_dag, states

from jobs import bundle_store
from jobs.bundle.format import BundleError, read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.external_models import ExternalModel, RegistrationRefused, register_external
from jobs.registry import ModelVersion, Registry
from jobs.sample_data import customers
from precompute.database import Database
from precompute.settings import Settings

NUMBERS = ["age", "tenure_months", "monthly_spend"]  # the contract's never-null numeric features


def add(settings: Settings, source: Path, name: str, **kwargs: Any) -> ModelVersion:
    request = ExternalModel(name=name, source=source, dataset="customers", **kwargs)
    return register_external(Database.from_settings(settings), settings, request)


def stored_versions(settings: Settings, name: str) -> list[Any]:
    return fetch_all(
        settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "SELECT v.version FROM precompute.model_versions v JOIN precompute.models m "
        "USING (model_id) WHERE m.name = %s",
        (name,),
    )


def test_a_bundle_from_a_users_scikit_learn_pipeline_scores_as_the_pipeline(
    job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(600, seed=3)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    pipeline, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)

    version = add(job_settings, folder / "user.zip", "byo-sklearn")

    assert (version.version, version.aliases, version.task) == (
        1,
        ("challenger",),
        "classification",
    )
    assert version.model_kind == "logistic_regression"  # the model op
    assert version.input_schema["dataset"] == "customers" and version.input_schema["version"] == 1
    bundle = read_bundle(bundle_store.load_bytes(version))
    assert bundle.metadata["classes"] == ["false", "true"]  # the boolean label's classes
    assert bundle.metadata["input_contract"]["entity_id"]["name"] == "customer_id"
    fresh = customers(200, seed=4, label=False)
    scored = compile_bundle(bundle, "cpu").score(fresh)
    expected = pipeline.predict_proba(fresh.select(NUMBERS).to_pandas())[:, 1]
    assert np.max(np.abs(scored.column("score").to_numpy() - expected)) <= 1e-6
    assert scored.column("entity_id").to_pylist()[:2] == ["c0", "c1"]


def test_a_bundle_folder_is_zipped_for_storage_with_the_users_files_unchanged(
    job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=5)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    _, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)

    version = add(job_settings, folder / "user", "byo-folder", aliases=("champion",))

    with zipfile.ZipFile(version.bundle_uri) as stored:
        names = set(stored.namelist())
        assert stored.read("bundle.json") == (folder / "user" / "bundle.json").read_bytes()
    assert {"bundle.json", "root/model.json", "precompute.json"} <= names
    assert version.aliases == ("champion",)


def test_every_problem_is_named_and_nothing_is_stored(
    job_settings: Settings, tmp_path: Path
) -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    # Read under the user's names: shoe_size is not in the contract, plan is a string there.
    frame = pd.DataFrame(rng.normal(size=(100, 3)), columns=["age", "shoe_size", "plan"])
    _, folder = user_pipeline(tmp_path, "bad", frame, rng.random(100) < 0.5, middle=PCA(2))

    with pytest.raises(RegistrationRefused) as refused:
        add(job_settings, folder / "bad.zip", "byo-refused")

    lines = str(refused.value).splitlines()
    assert "against contract customers/v1 (3 problems)" in lines[0]
    assert lines[1].startswith("  - node 'pca_") and "uses op 'pca', which the runtime" in lines[1]
    assert lines[2].startswith("  - input 'shoe_size' is not a feature of contract customers/v1")
    assert lines[3] == (
        "  - input 'plan' is read as numbers, but contract customers/v1 declares it string"
    )
    assert stored_versions(job_settings, "byo-refused") == []
    assert not Path(job_settings.models_root, "byo-refused").exists()


def test_a_nullable_column_without_an_imputer_and_a_wrong_class_count_are_refused(
    job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=6)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    frame = table.select(["age", "discount_rate"]).to_pandas().fillna(0.0)
    _, folder = user_pipeline(tmp_path, "nulls", frame, target)

    with pytest.raises(RegistrationRefused) as refused:
        add(job_settings, folder / "nulls.zip", "byo-nulls", classes=("stay", "go", "maybe"))

    problems = str(refused.value).splitlines()[1:]
    assert problems == [
        "  - input 'discount_rate' may be null under contract customers/v1, but the bundle "
        "reads it without an imputer (or a keep-invalid indexer) in front, so a null would "
        "fail scoring",
        "  - --classes names 3 classes, but the model has 2",
    ]
    assert stored_versions(job_settings, "byo-nulls") == []


def test_a_bundle_precompute_made_is_not_registered_as_one_from_elsewhere(
    job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=7)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    _, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)
    first = add(job_settings, folder / "user.zip", "byo-twice")

    with pytest.raises(RegistrationRefused, match=r"it already holds precompute\.json"):
        add(job_settings, Path(first.bundle_uri), "byo-twice")
    assert stored_versions(job_settings, "byo-twice") == [(1,)]


def test_precompute_model_register_on_the_command_line(
    job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=8)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    _, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)
    env = os.environ | {
        "DATABASE_URL": job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "PRECOMPUTE_MODELS_ROOT": job_settings.models_root,
    }
    done = run_cli(
        "model", "register", "byo-cli", str(folder / "user.zip"), "--contract", "customers@1",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "registered byo-cli v1 [challenger] (logistic_regression, classification) against "
        "contract customers/v1: bundle "
    )
    wrong = run_cli(
        "model", "register", "byo-cli", str(folder / "user.zip"), "--contract", "customers@9",
        env=env,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "contract 'customers' has no version 9" in wrong.stderr


def churn_data(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The never-null numeric features under their contract names, and the churn label."""
    table = customers(rows, seed=seed)
    target = table.column("churned").to_numpy(zero_copy_only=False).astype(int)
    return table.select(NUMBERS).to_pandas(), target


def test_an_xgboost_model_file_scores_as_xgboost_predicts_with_missing_values(
    job_settings: Settings, tmp_path: Path
) -> None:
    import xgboost

    # support_calls and discount_rate may be null: a booster takes them as NaN, its own way.
    columns = [*NUMBERS, "support_calls", "discount_rate"]
    table = customers(800, seed=9)
    frame = table.select(columns).to_pandas()
    target = table.column("churned").to_numpy(zero_copy_only=False).astype(int)
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1).fit(frame, target)
    model.get_booster().save_model(tmp_path / "model.json")  # names its features

    version = add(job_settings, tmp_path / "model.json", "byo-xgboost")

    assert (version.model_kind, version.task) == ("xgboost.classifier", "classification")
    bundle = read_bundle(bundle_store.load_bytes(version))
    assert bundle.metadata["registered_from"]["format"] == "xgboost"
    fresh = customers(300, seed=10, label=False)
    assert fresh.column("discount_rate").null_count > 0
    scored = compile_bundle(bundle, "cpu").score(fresh)
    expected = model.predict_proba(fresh.select(columns).to_pandas())[:, 1]
    assert np.max(np.abs(scored.column("score").to_numpy() - expected)) <= 1e-6


def test_a_lightgbm_model_file_scores_as_lightgbm_predicts(
    job_settings: Settings, tmp_path: Path
) -> None:
    import lightgbm

    frame, target = churn_data(800, seed=11)
    model = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, n_jobs=1, verbose=-1)
    model.fit(frame, target)
    model.booster_.save_model(tmp_path / "model.txt")

    version = add(job_settings, tmp_path / "model.txt", "byo-lightgbm", classes=("stays", "goes"))

    bundle = read_bundle(bundle_store.load_bytes(version))
    assert version.model_kind == "lightgbm.classifier"
    assert bundle.metadata["classes"] == ["stays", "goes"]
    fresh = customers(300, seed=12, label=False)
    scored = compile_bundle(bundle, "cpu").score(fresh)
    expected = np.asarray(model.predict_proba(fresh.select(NUMBERS).to_pandas()))[:, 1]
    assert np.max(np.abs(scored.column("score").to_numpy() - expected)) <= 1e-6
    assert set(scored.column("label").to_pylist()) <= {"stays", "goes"}


def test_a_multiclass_booster_against_a_boolean_label_is_refused(
    job_settings: Settings, tmp_path: Path
) -> None:
    import lightgbm

    frame, _ = churn_data(300, seed=14)
    tier = np.digitize(frame["tenure_months"], [80, 160])  # three classes
    model = lightgbm.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(frame, tier)
    model.booster_.save_model(tmp_path / "model.txt")

    with pytest.raises(RegistrationRefused) as refused:
        add(job_settings, tmp_path / "model.txt", "byo-tiers")
    assert str(refused.value).splitlines()[1:] == [
        "  - the model (lightgbm.classifier) has 3 classes, but contract customers/v1's label "
        "'churned' is boolean (a model of another target: name its classes with --classes)"
    ]


def test_a_booster_whose_features_do_not_match_the_contract_is_refused(
    job_settings: Settings, tmp_path: Path
) -> None:
    import xgboost

    frame, target = churn_data(200, seed=13)
    named = frame.rename(columns={"monthly_spend": "spend"}).assign(plan=1.0)
    xgboost.XGBClassifier(n_estimators=3).fit(named, target).save_model(tmp_path / "named.ubj")
    xgboost.XGBClassifier(n_estimators=3).fit(frame.to_numpy(), target).save_model(
        tmp_path / "unnamed.json"
    )

    with pytest.raises(RegistrationRefused) as named_refusal:
        add(job_settings, tmp_path / "named.ubj", "byo-named")
    assert str(named_refusal.value).splitlines()[1:] == [
        "  - feature 'spend' is not a feature of contract customers/v1 (its features: age, "
        "tenure_months, monthly_spend, support_calls, discount_rate, plan, region, autopay)",
        "  - feature 'plan' is string in contract customers/v1; a booster reads numbers",
    ]
    with pytest.raises(RegistrationRefused, match="features have no names, and contract"):
        add(job_settings, tmp_path / "unnamed.json", "byo-unnamed")
    assert stored_versions(job_settings, "byo-named") == []


def test_the_register_model_dag_registers_and_fails_a_refused_run(
    admin_url: str, settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=15)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    _, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)
    with airflow_env(admin_url, settings, tmp_path / "platform") as env:
        conf = {"model": "byo-dag", "bundle_path": str(folder / "user"), "contract": "customers@1"}
        done = run_dag("register_model", conf | {"alias": "champion"})
        assert states(done) == {"register": "success"}
        version = Registry(Database.from_settings(env.settings)).resolve("byo-dag")
        assert (version.version, version.aliases) == (1, ("champion",))
        refused = run_dag("register_model", conf | {"classes": "a,b,c"})
        assert states(refused) == {"register": "failed"}
        assert len(Registry(Database.from_settings(env.settings)).versions("byo-dag")) == 1


def test_a_users_multiclass_tree_takes_its_class_names_from_the_contract_label(
    job_settings: Settings, tmp_path: Path
) -> None:
    for module in ("pipeline", "tree.tree"):
        importlib.import_module(f"mleap.sklearn.{module}")  # attaches mleap's serializers
    from mleap.sklearn.preprocessing.data import FeatureExtractor
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    contracts = tmp_path / "contracts" / "tiers"
    contracts.mkdir(parents=True)
    text = Path("contracts/customers/v1.toml").read_text().replace('"customers"', '"tiers"', 1)
    label = 'name = "tier"\ntype = "string"\nnullable = false\nallowed = ["low", "mid", "high"]\n'
    (contracts / "v1.toml").write_text(text[: text.index("[label]")] + "[label]\n" + label)
    settings = job_settings.model_copy(update={"contracts_dir": contracts.parent})
    table = customers(600, seed=16)
    frame = table.select(NUMBERS).to_pandas()
    # Fitted on the names: scikit-learn orders its classes sorted (high, low, mid).
    tier = np.array(["low", "mid", "high"])[
        np.digitize(frame["tenure_months"] + frame["age"], [100, 200])
    ]
    extract = FeatureExtractor(input_scalars=NUMBERS, output_vector="raw")
    tree = DecisionTreeClassifier(max_depth=5, random_state=0)
    tree.mlinit(input_features="raw", prediction_column="tier_prediction", feature_names=NUMBERS)
    pipeline = Pipeline([(extract.name, extract), (tree.name, tree)])
    pipeline.mlinit()
    pipeline.fit(frame, tier)
    pipeline.serialize_to_bundle(str(tmp_path), "tiers", init=True)

    request = ExternalModel(name="byo-tiers-tree", source=tmp_path / "tiers.zip", dataset="tiers")
    version = register_external(Database.from_settings(settings), settings, request)

    bundle = read_bundle(bundle_store.load_bytes(version))
    # The label's allowed values, sorted as scikit-learn orders classes.
    assert bundle.metadata["classes"] == ["high", "low", "mid"] == list(tree.classes_)
    fresh = customers(200, seed=17, label=False)
    scored = compile_bundle(bundle, "cpu").score(fresh)
    got = np.asarray(scored.column("probabilities").items).reshape(-1, 3)
    expected = pipeline.predict_proba(fresh.select(NUMBERS).to_pandas())
    assert np.max(np.abs(got - expected)) <= 1e-6
    assert (
        scored.column("label").to_pylist()
        == pipeline.predict(fresh.select(NUMBERS).to_pandas()).tolist()
    )


SPARK_CONTRACT = """
name = "visitors"
version = 1
description = "The Spark fixtures' columns."

[entity_id]
name = "customer_id"
type = "string"
nullable = false
description = "Key."

[[features]]
name = "plan"
type = "string"
nullable = true
description = "Plan."

[[features]]
name = "region"
type = "string"
nullable = true
description = "Region."

[[features]]
name = "age"
type = "double"
nullable = true
description = "Age."

[[features]]
name = "visits"
type = "double"
nullable = true
description = "Visits."
"""


def test_a_spark_ml_bundle_with_multi_column_encoders_registers_and_scores_as_spark_would(
    job_settings: Settings, tmp_path: Path
) -> None:
    """Spark 3's bundle form (numbered labels_array_i attributes, multi-column one-hot, median
    and mode imputers, a three-class logistic regression) against a contract of its columns;
    the classes are Spark's label indices unless named."""
    from bundle_fixtures import customers as fixture_rows
    from bundle_fixtures import spark_multiclass

    contracts = tmp_path / "contracts" / "visitors"
    contracts.mkdir(parents=True)
    (contracts / "v1.toml").write_text(SPARK_CONTRACT)
    settings = job_settings.model_copy(update={"contracts_dir": contracts.parent})
    fixture = spark_multiclass(tmp_path / "spark", fixture_rows(400, seed=5))
    request = ExternalModel(name="byo-spark", source=fixture.path, dataset="visitors")

    version = register_external(Database.from_settings(settings), settings, request)

    bundle = read_bundle(bundle_store.load_bytes(version))
    assert bundle.metadata["classes"] == ["0", "1", "2"]
    rows = fixture_rows(200, seed=6)
    scored = compile_bundle(bundle, "cpu").score(rows)
    got = np.asarray(scored.column("probabilities").items).reshape(-1, 3)
    assert np.max(np.abs(got - fixture.expected(rows))) <= 1e-9


def test_boosters_trained_on_category_values_not_codes_are_refused(
    job_settings: Settings, tmp_path: Path
) -> None:
    """The trees test category codes; a model fitted on pandas categories 10, 20, 30 would read
    a row's 20 as the code 20: refused, saying so, for both libraries."""
    import lightgbm
    import xgboost

    frame = pd.DataFrame(
        {"age": np.arange(90.0), "plan": pd.Categorical([10, 20, 30] * 30)}
    ).rename(columns={"plan": "tenure_months"})
    target = np.arange(90) % 2
    xgboost.XGBClassifier(n_estimators=2, enable_categorical=True).fit(frame, target).save_model(
        tmp_path / "cats.json"
    )
    lgbm = lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(frame, target)
    lgbm.booster_.save_model(tmp_path / "cats.txt")

    for name in ("cats.json", "cats.txt"):
        with pytest.raises(RegistrationRefused, match="trained on pandas categories"):
            add(job_settings, tmp_path / name, f"byo-{name.replace('.', '-')}")


def _user_zip(tmp_path: Path) -> Path:
    table = customers(300, seed=8)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    _, folder = user_pipeline(tmp_path, "user", table.select(NUMBERS).to_pandas(), target)
    return folder / "user.zip"


def _copy(source: Path, target: Path, replace: dict[str, bytes], after: Any = None) -> Path:
    """The zip `source` written again with some entries' contents replaced, then `after(archive)`
    called before it is closed (to add entries or change their directory records)."""
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for item in original.infolist():
            archive.writestr(item.filename, replace.get(item.filename, original.read(item)))
        if after is not None:
            after(archive)
    return target


def _zeros(archive: zipfile.ZipFile, names: list[str], mebibytes: int) -> None:
    """Entries of zeros: they compress a thousandfold, as a zip bomb's padding does."""
    chunk = bytes(2**20)
    for name in names:
        with archive.open(name, "w", force_zip64=True) as entry:
            for _ in range(mebibytes):
                entry.write(chunk)


def _damaged(source: Path, target: Path, name: str) -> Path:
    """A copy of `source` whose entry `name` holds a deflate stream that cannot be inflated (the
    first block's type bits set to the reserved 11), as a bad disk or a broken copy leaves one."""
    content = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        item = archive.getinfo(name)
    header = item.header_offset
    name_length = int.from_bytes(content[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(content[header + 28 : header + 30], "little")
    content[header + 30 + name_length + extra_length] |= 0b110
    target.write_bytes(bytes(content))
    return target


def test_hostile_zips_are_refused_in_one_line_naming_the_file_and_nothing_is_stored(
    job_settings: Settings, tmp_path: Path
) -> None:
    """A zip bomb (one file, or all of them together, past the limits), a node name that climbs
    out of the bundle's folders, a damaged entry, one whose checksum does not match and one
    marked encrypted: each is refused in one line naming the user's file, and nothing is
    stored."""
    import json

    user = _user_zip(tmp_path)
    with zipfile.ZipFile(user) as original:
        root = json.loads(original.read("root/model.json"))
    nodes = root["attributes"]["nodes"]
    nodes["string"] = ["../../outside", *nodes["string"][1:]]

    # The directory is written when the archive closes: these change what it says.
    def encrypted(archive: zipfile.ZipFile) -> None:
        archive.NameToInfo["bundle.json"].flag_bits |= 0x1

    def wrong_checksum(archive: zipfile.ZipFile) -> None:
        archive.NameToInfo["bundle.json"].CRC ^= 1

    hostile = {
        "one-file-bomb": (
            _copy(user, tmp_path / "a.zip", {}, lambda a: _zeros(a, ["root/pad.bin"], 257)),
            "expands to 269,484,032 bytes, over the 268,435,456 a bundle file may hold",
        ),
        "all-files-bomb": (
            _copy(
                user,
                tmp_path / "b.zip",
                {},
                lambda a: _zeros(a, [f"root/pad-{i}.bin" for i in range(5)], 220),
            ),
            "over the 1,073,741,824 allowed",
        ),
        "climbing-name": (
            _copy(user, tmp_path / "c.zip", {"root/model.json": json.dumps(root).encode()}),
            "node name '../../outside' is not a plain folder name",
        ),
        "damaged": (_damaged(user, tmp_path / "d.zip", "bundle.json"), "no readable bundle.json"),
        # A file the runtime never reads is still copied into the registry: read, and refused.
        "damaged-extra": (
            _damaged(
                _copy(user, tmp_path / "g0.zip", {}, lambda a: a.writestr("notes.txt", b"n" * 99)),
                tmp_path / "g.zip",
                "notes.txt",
            ),
            "no readable notes.txt",
        ),
        "wrong-checksum": (
            _copy(user, tmp_path / "f.zip", {}, wrong_checksum),
            "no readable bundle.json",
        ),
        "encrypted": (
            _copy(user, tmp_path / "e.zip", {}, encrypted),
            "no readable bundle.json",
        ),
    }
    for case, (path, message) in hostile.items():
        with pytest.raises(BundleError) as refused:
            add(job_settings, path, f"byo-{case}")
        text = str(refused.value)
        assert message in text and str(path) in text and "\n" not in text, (case, text)
        assert stored_versions(job_settings, f"byo-{case}") == []
        assert not Path(job_settings.models_root, f"byo-{case}").exists()


def test_a_bundle_folder_holding_a_symbolic_link_is_refused(
    job_settings: Settings, tmp_path: Path
) -> None:
    """A link in a folder bundle could copy any file the worker can read into the registry."""
    folder = _user_zip(tmp_path).with_suffix("")
    (folder / "root" / "leak.json").symlink_to("/etc/passwd")

    with pytest.raises(BundleError, match=r"holds a symbolic link, .*leak\.json: refused"):
        add(job_settings, folder, "byo-link")
    assert stored_versions(job_settings, "byo-link") == []
