"""The Airflow DAGs: every file imports and is documented, and `dag.test()` runs the real jobs
(on the warm driver's local Spark, Delta on disk, the real PostgreSQL) end to end."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import (
    Env,
    airflow_env,
    created_key,
    dagbag,
    fetch_all,
    run_cli,
    run_dag,
    serve_api,
    states,
    warm_driver,
)

from jobs import bundle_store
from jobs.bundle.format import read_bundle
from jobs.registry import Registry
from jobs.run_check import RunCheckFailed, check_run
from jobs.sample_data import customers, with_bad_rows
from precompute import database
from precompute.database import Database
from precompute.names import DRIFT_ASSET
from precompute.settings import Settings


@pytest.fixture(scope="module")
def env(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    # The DAGs' Spark tasks run on a warm driver, as on the demo's platform (and in a third of
    # the time spark-submit takes); test_cluster and test_airflow_ui spark-submit.
    with (
        airflow_env(admin_url, settings, tmp_path_factory.mktemp("dags")) as made,
        warm_driver(made),
    ):
        yield made


def test_every_dag_imports_with_tags_retries_and_documented_params(env: Env) -> None:
    bag = dagbag()
    assert bag.import_errors == {}
    assert set(bag.dags) == {
        "score_batch",
        "train_model",
        "rescore",
        "maintenance",
        "register_model",
        "lookup_log",
    }
    for dag in bag.dags.values():
        assert dag.tags and dag.doc_md and dag.max_active_runs == 1, dag.dag_id
        assert all(t.retries >= 1 for t in dag.tasks), dag.dag_id
        for name, param in dag.params.items():
            assert param.description, f"{dag.dag_id}: Param {name} has no description"
            assert param.schema.get("type") or param.schema.get("enum"), (dag.dag_id, name)


def test_the_retraining_signal_is_a_teardown_emitting_the_drift_asset(env: Env) -> None:
    bag = dagbag()
    signal = bag.dags["score_batch"].get_task("retraining_signal")
    assert signal.is_teardown and signal.upstream_task_ids == {"check", "plan"}
    assert [asset.name for asset in signal.outlets] == [DRIFT_ASSET]
    # Off by default: train_model runs only when triggered.
    assert type(bag.dags["train_model"].timetable).__name__ == "NullTimetable"


def test_a_bad_param_is_rejected(env: Env) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="mode"):
        run_dag("score_batch", {"mode": "sideways"})
    with pytest.raises(ParamValidationError, match="max_rejected_share"):
        run_dag("score_batch", {"max_rejected_share": 2})


def test_train_model_registers_a_challenger_and_promotes_only_when_asked(env: Env) -> None:
    training = env.root / "training"
    training.mkdir()
    pq.write_table(customers(2000, seed=1), training / "part-0.parquet")
    conf: dict[str, Any] = {"input_path": str(training), "kind": "logistic_regression"}
    # Parameters as the trigger form sends them: JSON values, which must stay typed.
    first = run_dag("train_model", conf | {"estimator_params": {"C": 0.5, "fit_intercept": False}})
    assert states(first) == {
        "arguments": "success",
        "train": "success",
        "evaluate": "success",
        "promote": "skipped",  # the promote Param is off
    }
    assert aliases(env) == {"challenger": 1}
    version = Registry(Database.from_settings(env.settings)).resolve("churn", version=1)
    params = read_bundle(bundle_store.load_bytes(version)).metadata["params"]
    assert (params["C"], params["fit_intercept"]) == (0.5, False)
    promoted = run_dag("train_model", conf | {"promote": True})
    assert states(promoted)["promote"] == "success"
    assert aliases(env) == {"challenger": 2, "champion": 2}


def aliases(env: Env) -> dict[str, int]:
    rows = fetch_all(
        env.admin_url,
        "SELECT a.alias, v.version FROM precompute.model_aliases a "
        "JOIN precompute.model_versions v USING (version_id)",
    )
    return dict(rows)


@pytest.fixture(scope="module")
def champion(env: Env) -> int:
    """A champion version for the scoring tests, trained through the DAG if none is there."""
    if "champion" not in aliases(env):
        training = env.root / "training-champion"
        training.mkdir()
        pq.write_table(customers(2000, seed=1), training / "part-0.parquet")
        run_dag("train_model", {"input_path": str(training), "promote": True})
    return aliases(env)["champion"]


def test_score_batch_publishes_what_sql_and_the_lookup_api_return(
    env: Env, champion: int, settings: Settings, tmp_path: Path
) -> None:
    batch = Path(env.settings.landing_root) / "b-0001"
    batch.mkdir(parents=True)
    pq.write_table(
        with_bad_rows(customers(500, seed=3, label=False), bad=10), batch / "part-0.parquet"
    )
    run = run_dag("score_batch", {"input_path": str(batch)})
    assert states(run) == {
        "plan": "success",
        "stages": "success",
        "check": "success",
        "retraining_signal": "skipped",  # PRECOMPUTE_RETRAIN_ON_DRIFT is off
    }
    run_id = f"score-b-0001-churn-v{champion}"
    reader = database.with_role(env.admin_url, "reader", settings)
    [(state, read, quarantined, published)] = fetch_all(
        reader,
        "SELECT state, rows_read, rows_quarantined, rows_published FROM analytics.runs "
        "WHERE run_id = %s",
        (run_id,),
    )
    assert (state, read, quarantined, published) == ("succeeded", 500, 10, 490)
    [(served,)] = fetch_all(
        reader,
        "SELECT count(*) FROM analytics.current_predictions WHERE model = 'churn' AND run_id = %s",
        (run_id,),
    )
    assert served == 490
    [(check_state,)] = fetch_all(
        env.admin_url,
        "SELECT state FROM precompute.run_stages WHERE run_id = %s AND stage = 'check'",
        (run_id,),
    )
    assert check_state == "succeeded"
    api_env = os.environ | {"PRECOMPUTE_API_KEY_CACHE_SECONDS": "0"}
    key = created_key(run_cli("api-key", "create", f"dag-{uuid.uuid4().hex[:6]}", env=api_env))
    with serve_api(api_env, tmp_path / "api.log") as base:
        answer = httpx.get(
            f"{base}/v1/predictions/c499",
            params={"model": "churn"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["run_id"] == run_id and answer.json()["version"] == champion
    # A scheduled run finds nothing new under the landing root: the run is skipped.
    again = run_dag("score_batch", {})
    assert states(again)["plan"] == "skipped"


def test_batches_landed_together_are_scored_in_landing_order_each_once(
    env: Env, champion: int, settings: Settings
) -> None:
    landing = Path(env.settings.landing_root)
    for n, name in enumerate(["b-late-name", "b-early-name"]):  # landing order, not name order
        folder = landing / name
        folder.mkdir(parents=True)
        pq.write_table(
            customers(50, seed=10 + n, first_id=700_000 + 100 * n, label=False),
            folder / "part-0.parquet",
        )
        os.utime(folder, (1_700_000_000 + n, 1_700_000_000 + n))
    run = run_dag("score_batch", {})
    assert states(run) == {
        "plan": "success",
        "stages": "success",
        "check": "success",
        "retraining_signal": "skipped",  # PRECOMPUTE_RETRAIN_ON_DRIFT is off
    }
    rows = fetch_all(
        env.admin_url,
        "SELECT r.batch_id, r.state, r.rows_published, s.started_at FROM precompute.runs r "
        "JOIN precompute.run_stages s USING (run_id) WHERE s.stage = 'ingest' "
        "AND r.batch_id IN ('b-late-name', 'b-early-name') ORDER BY s.started_at",
    )
    assert [(b, state, n) for b, state, n, _ in rows] == [
        ("b-late-name", "succeeded", 50),
        ("b-early-name", "succeeded", 50),
    ]
    again = run_dag("score_batch", {})  # each once: nothing is left to plan
    assert states(again)["plan"] == "skipped"


def test_a_failing_stage_fails_the_dag_run_with_its_message_in_the_task_log(
    env: Env, champion: int, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = env.root / "no-such-batch"
    run = run_dag("score_batch", {"input_path": str(missing), "batch_id": "b-missing"})
    assert str(run.state) == "failed"
    assert states(run)["stages"] == "failed"
    assert states(run)["check"] == "failed"  # a failed run is checked (and reported) too
    log = capfd.readouterr()  # dag.test() writes the task logs to the console
    said = f"error: run score-b-missing-churn-v{champion} failed: input {missing} does not exist"
    assert said in log.out + log.err


def test_rescore_shadow_scores_every_entity_then_promotes_when_asked(
    env: Env, champion: int
) -> None:
    ingested = fetch_all(env.admin_url, "SELECT count(*) FROM precompute.runs WHERE rows_read > 0")
    assert ingested[0][0] >= 1, "needs the scoring test's batch"
    shadow = 1 if champion != 1 else 2
    run = run_dag("rescore", {"version": shadow})
    assert states(run)["promote"] == "skipped" and states(run)["check"] == "success"
    [(served,)] = fetch_all(
        env.admin_url,
        "SELECT count(*) FROM precompute.predictions p JOIN precompute.model_versions v "
        "ON v.version_id = p.model_version_id WHERE v.version = %s",
        (shadow,),
    )
    [(accepted,)] = fetch_all(
        env.admin_url,
        "SELECT sum(rows_accepted) FROM precompute.runs WHERE mode = 'incremental' "
        "AND state = 'succeeded'",
    )
    assert served == accepted == 590  # every accepted entity of the scored batches (ids differ)
    assert aliases(env)["champion"] == champion  # shadow scoring changes nothing served
    promoted = run_dag("rescore", {"version": shadow, "promote": True})
    assert states(promoted)["promote"] == "success"
    assert aliases(env)["champion"] == shadow


def test_maintenance_compacts_the_lake_and_drops_only_unneeded_old_runs(env: Env) -> None:
    fetch_all(
        env.admin_url,
        "INSERT INTO precompute.runs (run_id, mode, state, finished_at) VALUES "
        "('ancient-failed', 'full', 'failed', now() - interval '400 days'), "
        "('recent-failed', 'full', 'failed', now())",
    )
    from deltalake import DeltaTable

    history = str(Path(env.settings.lake_uri) / "predictions")
    files_before = len(DeltaTable(history).file_uris())
    run = run_dag("maintenance", {})
    assert states(run) == {"lake": "success", "serving": "success"}
    assert len(DeltaTable(history).file_uris()) < files_before  # several runs' files, compacted
    kept = {r[0] for r in fetch_all(env.admin_url, "SELECT run_id FROM precompute.runs")}
    assert "ancient-failed" not in kept and "recent-failed" in kept
    assert any(r.startswith("score-b-0001") for r in kept)  # served: kept whatever its age


def test_a_scheduled_run_with_no_new_batch_answers_pending_score_requests(
    env: Env, champion: int, tmp_path: Path
) -> None:
    newcomer = customers(1, seed=21, first_id=900_000, label=False)
    features = {
        name: newcomer.column(name)[0].as_py()
        for name in newcomer.column_names
        if name not in ("customer_id", "updated_at")
    }
    api_env = os.environ | {"PRECOMPUTE_API_KEY_CACHE_SECONDS": "0"}
    key = created_key(
        run_cli(
            "api-key",
            "create",
            f"req-{uuid.uuid4().hex[:6]}",
            "--scope",
            "score-requests:write",
            "--scope",
            "predictions:read",
            env=api_env,
        )
    )
    auth = {"Authorization": f"Bearer {key}"}
    with serve_api(api_env, tmp_path / "api.log") as base:
        submitted = httpx.post(
            f"{base}/v1/score-requests",
            headers=auth,
            json={"model": "churn", "entity_id": "c900000", "features": features},
        )
        assert submitted.status_code == 202, submitted.text
        request_id = submitted.json()["request_id"]
        run = run_dag("score_batch", {})  # nothing new under the landing root
        assert states(run) == {
            "plan": "success",
            "stages": "success",
            "check": "success",
            "retraining_signal": "skipped",  # PRECOMPUTE_RETRAIN_ON_DRIFT is off
        }
        done = httpx.get(f"{base}/v1/score-requests/{request_id}", headers=auth).json()
        assert done["state"] == "done" and done["run_id"].startswith("requests-churn-")
        served = httpx.get(f"{base}/v1/predictions/c900000?model=churn", headers=auth).json()
        assert served["score"] == done["score"] and served["run_id"] == done["run_id"]


def test_the_check_fails_runs_over_the_limits_or_whose_counts_do_not_add_up(env: Env) -> None:
    fetch_all(
        env.admin_url,
        """
        INSERT INTO precompute.runs (run_id, mode, batch_id, state, rows_read, rows_accepted,
                                     rows_quarantined, rows_scored, rows_published)
        VALUES ('drifted', 'incremental', 'x1', 'succeeded', 5000, 5000, 0, 5000, 5000),
               ('rejecting', 'incremental', 'x2', 'succeeded', 100, 80, 20, 80, 80),
               ('short', 'incremental', 'x3', 'succeeded', 100, 100, 0, 90, 90),
               ('fine', 'incremental', 'x4', 'succeeded', 5000, 4990, 10, 4990, 4990);
        INSERT INTO precompute.run_metrics (run_id, name, value)
        VALUES ('drifted', 'psi', 0.9), ('fine', 'psi', 0.01);
        """,
    )
    cases = {
        "drifted": "score drift PSI 0.9000 is over the limit 0.25",
        "rejecting": "20.00% of the batch was rejected (20 of 100 rows)",
        "short": "90 rows scored but 100 accepted",
    }
    for run_id, reason in cases.items():
        with pytest.raises(RunCheckFailed, match=re.escape(reason)):
            check_run(env.settings, run_id, 0.05, 0.25)
        [(state, error)] = fetch_all(
            env.admin_url, "SELECT state, error FROM precompute.runs WHERE run_id = %s", (run_id,)
        )
        assert state == "failed" and error.startswith("check: ") and reason in error
    assert "PSI 0.0100" in check_run(env.settings, "fine", 0.05, 0.25)


def test_models_made_elsewhere_are_scored_by_score_batch_served_and_looked_up(
    env: Env, settings: Settings, tmp_path: Path
) -> None:
    """A user's scikit-learn pipeline written by the `mleap` package, an XGBoost booster and a
    three-class LightGBM booster, each registered with `precompute model register`, scored by
    `score_batch` on a landed batch, and looked up over HTTP as their own libraries predict."""
    import lightgbm
    import numpy as np
    import xgboost
    from bundle_fixtures import user_pipeline

    train = customers(1500, seed=21)
    numbers = ["age", "tenure_months", "monthly_spend"]
    frame = train.select(numbers).to_pandas()
    churned = train.column("churned").to_numpy(zero_copy_only=False).astype(int)
    with_nulls = [*numbers, "support_calls", "discount_rate"]  # a booster takes NaN its own way
    (tmp_path / "sklearn").mkdir()
    pipeline, folder = user_pipeline(tmp_path / "sklearn", "user-churn", frame, churned)
    boosted = xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)
    boosted.fit(train.select(with_nulls).to_pandas(), churned)
    boosted.get_booster().save_model(tmp_path / "churn.json")
    tiers = np.digitize(frame["tenure_months"], [80, 160])  # three classes
    tiered = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, n_jobs=1, verbose=-1)
    tiered.fit(frame, tiers)
    tiered.booster_.save_model(tmp_path / "tiers.txt")
    models = {
        "byo-sklearn": [str(folder / "user-churn")],
        "byo-xgboost": [str(tmp_path / "churn.json")],
        "byo-tiers": [str(tmp_path / "tiers.txt"), "--classes", "short,mid,long"],
    }
    for name, source in models.items():
        registered = run_cli(
            "model", "register", name, *source, "--contract", "customers", "--alias", "champion",
            env=dict(os.environ),
        )  # fmt: skip
        assert registered.returncode == 0, registered.stderr

    batch = Path(env.settings.landing_root) / "b-byo"
    batch.mkdir(parents=True)
    rows = customers(300, seed=22, first_id=50_000, label=False)
    pq.write_table(rows, batch / "part-0.parquet")
    for name in models:
        run = run_dag("score_batch", {"input_path": str(batch), "model": name})
        assert states(run) == {
            "plan": "success",
            "stages": "success",
            "check": "success",
            "retraining_signal": "skipped",  # PRECOMPUTE_RETRAIN_ON_DRIFT is off
        }, name

    expected = {
        "byo-sklearn": pipeline.predict_proba(rows.select(numbers).to_pandas())[:, 1],
        "byo-xgboost": boosted.predict_proba(rows.select(with_nulls).to_pandas())[:, 1],
        "byo-tiers": tiered.predict_proba(rows.select(numbers).to_pandas()),
    }
    ids = rows.column("customer_id").to_pylist()
    api_env = os.environ | {"PRECOMPUTE_API_KEY_CACHE_SECONDS": "0"}
    key = created_key(run_cli("api-key", "create", f"byo-{uuid.uuid4().hex[:6]}", env=api_env))
    with serve_api(api_env, tmp_path / "api.log") as base:
        answers = {
            name: httpx.post(
                f"{base}/v1/predictions:batchGet",
                params={"model": name},
                json={"ids": ids},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            for name in models
        }
    for name, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["missing"] == [], name
        served = {p["entity_id"]: p for p in answer.json()["predictions"]}
        got = [served[i] for i in ids]
        if name == "byo-tiers":
            probabilities = np.array([[p["probabilities"][c] for c in ("short", "mid", "long")]
                                      for p in got])  # fmt: skip
            assert np.max(np.abs(probabilities - expected[name])) <= 1e-6
            assert [p["label"] for p in got] == [
                ("short", "mid", "long")[k] for k in np.argmax(expected[name], axis=1)
            ]
            assert np.allclose([p["score"] for p in got], expected[name].max(axis=1), atol=1e-6)
        else:
            assert np.max(np.abs(np.array([p["score"] for p in got]) - expected[name])) <= 1e-6
            assert all(p["probabilities"] is None for p in got), name
    reader = database.with_role(env.admin_url, "reader", settings)
    assert fetch_all(
        reader,
        "SELECT class, count(*) FROM analytics.current_class_probabilities "
        "WHERE model = 'byo-tiers' GROUP BY class ORDER BY class",
    ) == [("long", 300), ("mid", 300), ("short", 300)]
