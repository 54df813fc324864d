"""The training job on a real local Spark, Delta tables on disk and the real database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from jobs import bundle_store
from jobs.batch_files import InputError
from jobs.bundle.format import read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.fitting import train
from jobs.sample_data import customers
from jobs.train_request import TrainingDataError, TrainRequest
from precompute.contracts import ContractError
from precompute.database import Database
from precompute.settings import Settings


def write_batch(folder: Path, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def test_training_from_files_registers_a_challenger_with_metrics_and_reference(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    data = write_batch(tmp_path / "train", customers(4000, seed=11))
    result = train(
        spark,
        job_settings,
        Database.from_settings(job_settings),
        TrainRequest(
            model="churn-files",
            dataset="customers",
            kind="logistic_regression",
            input_path=str(data),
        ),
    )
    version = result.version

    assert (version.version, version.aliases) == (1, ("challenger",))
    assert (result.rows_train, result.rows_validation) == (3200, 800)
    assert result.parity_max_diff <= 1e-6
    assert set(version.metrics) == {"auc", "log_loss", "accuracy"}
    assert 0.6 < version.metrics["auc"] <= 1.0  # the label depends on the features
    assert version.training_data == {
        "files": str(data),
        "file_count": 1,
        "rows": 4000,
        "validation_rows": 800,
    }
    reference = version.reference_scores
    assert reference is not None and reference["count"] == 800
    assert abs(sum(reference["shares"]) - 1.0) < 1e-9
    assert version.input_schema["dataset"] == "customers"
    assert [f["name"] for f in version.input_schema["features"]][:2] == ["age", "tenure_months"]
    # The registered bundle scores new customers through the bundle store's checked load.
    bundle = read_bundle(bundle_store.load_bytes(version))
    plan = compile_bundle(bundle, "cpu", model_version_id=version.version_id)
    out = plan.score(customers(10, seed=12, label=False))
    assert out.column("model_version_id").to_pylist() == [version.version_id] * 10
    assert set(out.column("label").to_pylist()) <= {"true", "false"}


def test_training_from_a_delta_table_records_the_version_it_read(
    spark: Any, job_settings: Settings
) -> None:
    from deltalake import write_deltalake

    uri = f"{job_settings.lake_uri}/training/customers"
    first = customers(1000, seed=21)
    write_deltalake(uri, first)
    write_deltalake(uri, customers(500, seed=22, first_id=5000), mode="append")

    result = train(
        spark,
        job_settings,
        Database.from_settings(job_settings),
        TrainRequest(
            model="churn-delta",
            dataset="customers",
            kind="random_forest",
            table="training/customers",
            table_version=0,
            params={"n_estimators": 10, "max_depth": 4},
        ),
    )

    assert result.version.training_data == {
        "delta_table": uri,
        "table_version": 0,
        "rows": 1000,
        "validation_rows": 200,
    }
    assert result.version.model_kind == "random_forest"
    assert result.parity_max_diff == 0.0


def test_training_data_that_breaks_the_contract_fails_naming_rows_and_reasons(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    table = customers(300, seed=31)
    age = table.column("age").to_numpy().copy()
    age[7] = 5.0
    churned = table.column("churned").to_pylist()
    churned[9] = None
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(age))
    table = table.set_column(
        table.schema.get_field_index("churned"), "churned", pa.array(churned, pa.bool_())
    )
    data = write_batch(tmp_path / "bad", table)

    with pytest.raises(TrainingDataError) as failure:
        train(
            spark,
            job_settings,
            Database.from_settings(job_settings),
            TrainRequest(
                model="churn-bad", dataset="customers", kind="decision_tree", input_path=str(data)
            ),
        )
    message = str(failure.value)
    assert "breaks contract customers/v1 (with label 'churned'): 2 of 300 rows rejected" in message
    assert "'c7': out_of_range(age)" in message and "'c9': null_required(churned)" in message
    assert not Path(job_settings.models_root, "churn-bad").exists()


def test_a_missing_label_column_and_a_one_class_label_are_refused(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    no_label = write_batch(tmp_path / "nolabel", customers(100, seed=41, label=False))
    with pytest.raises(InputError, match="missing required columns churned"):
        train(
            spark,
            job_settings,
            Database.from_settings(job_settings),
            TrainRequest(
                model="churn-x", dataset="customers", kind="decision_tree", input_path=str(no_label)
            ),
        )
    table = customers(100, seed=42)
    one_class = table.set_column(
        table.schema.get_field_index("churned"), "churned", pa.array(np.zeros(100, bool))
    )
    with pytest.raises(TrainingDataError, match="has 1 distinct values"):
        train(
            spark,
            job_settings,
            Database.from_settings(job_settings),
            TrainRequest(
                model="churn-x",
                dataset="customers",
                kind="decision_tree",
                input_path=str(write_batch(tmp_path / "oneclass", one_class)),
            ),
        )


def test_a_contract_without_a_label_cannot_train() -> None:
    from precompute.contracts import Contract

    contract = Contract.model_validate(
        {
            "name": "plain",
            "version": 1,
            "entity_id": {"name": "id", "type": "string", "nullable": False},
            "features": [{"name": "x", "type": "double"}],
        }
    )
    with pytest.raises(ContractError, match="declares no label"):
        contract.for_training()


def test_precompute_train_on_the_command_line(job_settings: Settings, tmp_path: Path) -> None:
    data = write_batch(tmp_path / "cli", customers(1500, seed=51))
    env = os.environ | {
        "DATABASE_URL": job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "PRECOMPUTE_MODELS_ROOT": job_settings.models_root,
        "PRECOMPUTE_LAKE_URI": job_settings.lake_uri,
    }
    command = ["train", "--model", "churn-cli", "--dataset", "customers", "--input", str(data)]
    done = run_cli(
        *command,
        "--kind",
        "decision_tree",
        "--param",
        "max_depth=3",
        "--alias",
        "champion",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "registered churn-cli v1 [champion] (decision_tree)" in done.stdout
    wrong = run_cli(*command, "--kind", "decision_tree", "--param", "depth=3", env=env)
    assert wrong.returncode == 1
    assert "DecisionTreeClassifier has no parameter depth" in wrong.stderr
    verified = run_cli("model", "verify", "churn-cli@1", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "churn-cli v1 (decision_tree): MLeap's runtime and ours agree on 1502 rows" in (
        verified.stdout
    )


def contract_with_label(folder: Path, name: str, label: str) -> Path:
    """A contracts folder holding the customers contract as `name`, with `label` (TOML) as its
    [label] section; returns the folder."""
    text = Path("contracts/customers/v1.toml").read_text()
    text = text.replace('name = "customers"', f'name = "{name}"', 1)
    text = text[: text.index("[label]")] + "[label]\n" + label
    (folder / name).mkdir(parents=True)
    (folder / name / "v1.toml").write_text(text)
    return folder


def with_label(table: pa.Table, name: str, values: Any) -> pa.Table:
    return table.drop_columns(["churned"]).append_column(name, pa.array(values))


def train_kind(
    spark: Any, settings: Settings, data: Path, model: str, kind: str, dataset: str
) -> Any:
    """Train `kind` on the files at `data` under the contract `dataset`; the TrainResult."""
    return train(
        spark,
        settings,
        Database.from_settings(settings),
        TrainRequest(
            model=model,
            dataset=dataset,
            kind=kind,  # type: ignore[arg-type]
            input_path=str(data),
            params={"n_estimators": 20} if kind in ("xgboost", "lightgbm", "random_forest") else {},
        ),
    )


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_boosters_train_and_their_bundle_scores_as_the_library(
    spark: Any, job_settings: Settings, tmp_path: Path, kind: str
) -> None:
    data = write_batch(tmp_path / "train", customers(1500, seed=61))

    result = train_kind(spark, job_settings, data, f"churn-{kind}", kind, "customers")

    version = result.version
    assert version.model_kind == kind and version.task == "classification"
    assert result.parity_max_diff <= 1e-6  # probabilities against the library's predict_proba
    assert 0.6 < version.metrics["auc"] <= 1.0
    bundle = read_bundle(bundle_store.load_bytes(version))
    assert bundle.nodes[-1].op == f"{kind}.classifier"
    assert bundle.metadata["params"]["n_estimators"] == 20
    assert bundle.metadata["params"]["n_jobs"] == 1  # one thread per Spark task
    out = compile_bundle(bundle, "cpu").score(customers(20, seed=62, label=False))
    assert set(out.column("label").to_pylist()) <= {"true", "false"}


def test_a_booster_regressor_predicts_a_numeric_label(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    contracts = contract_with_label(
        tmp_path / "contracts", "spend", 'name = "next_spend"\ntype = "double"\nnullable = false\n'
    )
    settings = job_settings.model_copy(update={"contracts_dir": contracts})
    table = customers(1200, seed=63)
    spend = table.column("monthly_spend").to_numpy()
    data = write_batch(tmp_path / "train", with_label(table, "next_spend", spend * 1.1 + 3.0))

    result = train_kind(spark, settings, data, "spend-lightgbm", "lightgbm", "spend")

    assert result.version.task == "regression" and result.version.model_kind == "lightgbm"
    assert result.parity_max_diff <= 1e-6
    assert result.version.metrics["r2"] > 0.9


@pytest.mark.parametrize(
    "kind", ["logistic_regression", "decision_tree", "random_forest", "xgboost", "lightgbm"]
)
def test_a_multiclass_model_keeps_every_class_probability(
    spark: Any, job_settings: Settings, tmp_path: Path, kind: str
) -> None:
    contracts = contract_with_label(
        tmp_path / "contracts",
        "tiers",
        'name = "tier"\ntype = "string"\nnullable = false\nallowed = ["low", "mid", "high"]\n',
    )
    settings = job_settings.model_copy(update={"contracts_dir": contracts})
    table = customers(1200, seed=64)
    tier = np.array(["low", "mid", "high"])[np.digitize(table.column("tenure_months"), [80, 160])]
    data = write_batch(tmp_path / "train", with_label(table, "tier", tier))

    result = train_kind(spark, settings, data, f"tier-{kind.replace('_', '-')}", kind, "tiers")

    assert result.parity_max_diff <= 1e-6  # every class's probability
    assert set(result.version.metrics) == {"auc", "log_loss", "accuracy"}
    assert result.version.metrics["accuracy"] > 0.6
    bundle = read_bundle(bundle_store.load_bytes(result.version))
    assert bundle.metadata["classes"] == ["high", "low", "mid"]  # sorted distinct values
    reference = result.version.reference_scores
    assert reference is not None and set(reference["classes"]) == {"high", "low", "mid"}
    out = compile_bundle(bundle, "cpu").score(customers(30, seed=65, label=False))
    probabilities = out.column("probabilities").to_pylist()
    assert [k for k, _ in probabilities[0]] == ["high", "low", "mid"]
    assert all(abs(sum(p for _, p in row) - 1.0) < 1e-9 for row in probabilities)
    best = [max(row, key=lambda kv: kv[1]) for row in probabilities]
    assert out.column("label").to_pylist() == [k for k, _ in best]
    assert out.column("score").to_pylist() == [p for _, p in best]


def test_multiclass_bundles_training_writes_agree_with_mleaps_own_runtime(
    settings: Settings, tmp_path: Path
) -> None:
    from conftest import export_model

    from jobs.bundle import mleap_check
    from jobs.external_models import with_metadata

    table = customers(600, seed=66)
    tier = np.digitize(table.column("tenure_months").to_numpy(), [80, 160])
    checks = []
    for kind, params in (("logistic_regression", None), ("random_forest", {"n_estimators": 5})):
        _, path = export_model(tmp_path, kind, table, tier, params=params)
        metadata = read_bundle(path).metadata | {"classes": ["low", "mid", "high"]}
        path.write_bytes(with_metadata(path.read_bytes(), metadata, str(path)))
        rows = customers(200, seed=67, label=False)
        checks.append((path, mleap_check.with_edge_rows(rows, read_bundle(path))))

    # One JVM for both. With scikit-learn's scores equal to ours (the multiclass training test),
    # this shows MLeap reads the column-major coefficient matrix as scikit-learn's coef_.
    for parity in mleap_check.compare(checks, settings):
        assert parity.agrees, parity.summary()
