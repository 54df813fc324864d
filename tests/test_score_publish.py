"""Scoring and publishing end to end: real local Spark, Delta on disk, the real PostgreSQL.

The module trains two model versions once (a logistic regression, champion, and a decision
tree, challenger) and shares one lake; each test ingests its own batches under its own ids.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fetch_all, settings_under

from jobs import bundle_store, predictions, serving_prune
from jobs.bundle.format import read_bundle
from jobs.bundle.runtime import compile_bundle
from jobs.fitting import train
from jobs.ingest import IngestRequest, ingest
from jobs.lake import Txn, lake
from jobs.publish import PublishInputError, publish
from jobs.registry import ModelVersion, Registry
from jobs.run_records import CountMismatch, RunRecorder
from jobs.sample_data import customers, with_bad_rows
from jobs.score import ScoreRequest, score
from jobs.score_input import ScoreInputError
from jobs.train_request import TrainRequest
from precompute import database, serving_store
from precompute.database import Database
from precompute.settings import Settings

MODEL = "churn-serving"


@dataclass(frozen=True)
class Setup:
    settings: Settings
    db: Database
    admin_url: str
    reader_url: str
    champion: ModelVersion
    challenger: ModelVersion
    landing: Path


@pytest.fixture(scope="module")
def setup(
    spark: Any, settings: Settings, jobs_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    root = tmp_path_factory.mktemp("score_publish")
    job_settings = settings_under(settings, jobs_database, root)
    training = write_batch(root / "training", customers(3000, seed=1))
    db = Database.from_settings(job_settings)
    versions = []
    for kind, alias in (("logistic_regression", "champion"), ("decision_tree", "challenger")):
        request = TrainRequest(
            model=MODEL,
            dataset="customers",
            kind=kind,  # type: ignore[arg-type]
            input_path=str(training),
            params={"max_depth": 5} if kind == "decision_tree" else {},
            aliases=(alias,),
        )
        versions.append(train(spark, job_settings, db, request).version)
    return Setup(
        job_settings,
        db,
        jobs_database,
        database.with_role(jobs_database, "reader", settings),
        versions[0],
        versions[1],
        root / "landing",
    )


def write_batch(folder: Path, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def ingest_batch(spark: Any, setup: Setup, batch_id: str, table: pa.Table) -> Path:
    folder = write_batch(setup.landing / batch_id, table)
    request = IngestRequest(str(folder), batch_id, "customers", run_id=batch_id)
    ingest(spark, setup.settings, request)
    return folder


def served(setup: Setup, version: ModelVersion) -> dict[str, tuple[float, str | None, str]]:
    rows = fetch_all(
        setup.reader_url,
        "SELECT entity_id, score, label, run_id FROM precompute.predictions "
        "WHERE model_version_id = %s",
        (version.version_id,),
    )
    return {entity: (s, label, run) for entity, s, label, run in rows}


def run_row(setup: Setup, run_id: str) -> dict[str, Any]:
    columns = (
        "state, rows_read, rows_accepted, rows_quarantined, rows_scored, rows_published, "
        "rows_unpublished, error"
    )
    rows = fetch_all(
        setup.admin_url, f"SELECT {columns} FROM precompute.runs WHERE run_id = %s", (run_id,)
    )
    return dict(zip([c.strip() for c in columns.split(",")], rows[0], strict=True))


def expected_scores(setup: Setup, version: ModelVersion, table: pa.Table) -> dict[str, float]:
    """What the bundle runtime gives for these rows, outside Spark."""
    plan = compile_bundle(read_bundle(bundle_store.load_bytes(version)), "cpu")
    out = plan.score(table)
    return dict(
        zip(out.column("entity_id").to_pylist(), out.column("score").to_pylist(), strict=True)
    )


def test_an_incremental_run_scores_keeps_history_and_publishes_what_it_scored(
    spark: Any, setup: Setup
) -> None:
    batch = with_bad_rows(customers(2000, seed=2, first_id=0, label=False), bad=30)
    ingest_batch(spark, setup, "inc-1", batch)

    result = score(
        spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="inc-1", run_id="inc-1")
    )
    assert (result.rows_scored, result.version, result.already_scored) == (1970, 1, False)
    published = publish(spark, setup.settings, setup.db, "inc-1")
    assert (published.rows_published, published.strategy) == (1970, "swap")  # first of v1

    # Counts add up across the stages, on the run's own row.
    run = run_row(setup, "inc-1")
    assert run == {
        "state": "succeeded",
        "rows_read": 2000,
        "rows_accepted": 1970,
        "rows_quarantined": 30,
        "rows_scored": 1970,
        "rows_published": 1970,
        "rows_unpublished": 0,
        "error": None,
    }
    stages = fetch_all(
        setup.admin_url,
        "SELECT stage, state, rows_in, rows_out, finished_at >= started_at "
        "FROM precompute.run_stages WHERE run_id = 'inc-1' ORDER BY started_at",
    )
    assert stages == [
        ("ingest", "succeeded", 2000, 1970, True),
        ("score", "succeeded", 1970, 1970, True),
        ("publish", "succeeded", 1970, 1970, True),
    ]

    # Served scores are exactly what the model gives for the accepted rows.
    want = expected_scores(setup, setup.champion, batch.slice(30))
    got = served(setup, setup.champion)
    assert set(got) == set(want)
    assert max(abs(got[e][0] - want[e]) for e in want) == 0.0
    assert {label for _, label, _ in got.values()} <= {"true", "false"}

    # The Delta history holds the same rows with the run's constants.
    history = predictions.run_rows(
        lake(spark, setup.settings), "inc-1", run_scored_at(setup, "inc-1")
    ).toArrow()
    assert history.num_rows == 1970
    assert set(history.column("model_version_id").to_pylist()) == {setup.champion.version_id}
    assert set(history.column("model").to_pylist()) == {MODEL}

    # Distribution and drift against the training reference.
    metrics = dict(
        fetch_all(
            setup.admin_url,
            "SELECT name, coalesce(value::text, detail::text) FROM precompute.run_metrics "
            "WHERE run_id = 'inc-1'",
        )
    )
    assert set(metrics) == {
        "quarantine_reasons",  # ingest's: the 30 bad rows' age is out of range
        "score_count",
        "score_mean",
        "score_std",
        "score_quantiles",
        "score_histogram",
        "psi",
    }
    assert float(metrics["quarantine_reasons"]) == 30
    assert float(metrics["score_count"]) == 1970
    assert abs(float(metrics["score_mean"]) - float(np.mean(list(want.values())))) < 1e-9
    assert 0 <= float(metrics["psi"]) < 0.1  # same population as the training data

    # Analysts see it through the documented view, with the reader role.
    rows = fetch_all(
        setup.reader_url,
        "SELECT count(*), min(version) FROM analytics.current_predictions WHERE model = %s",
        (MODEL,),
    )
    assert rows == [(1970, 1)]


def run_scored_at(setup: Setup, run_id: str) -> Any:
    return fetch_all(
        setup.admin_url, "SELECT scored_at FROM precompute.runs WHERE run_id = %s", (run_id,)
    )[0][0]


def test_rerunning_a_scored_and_published_run_changes_nothing(spark: Any, setup: Setup) -> None:
    ingest_batch(spark, setup, "rerun-1", customers(300, seed=3, first_id=10_000, label=False))
    score(
        spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="rerun-1", run_id="rerun-1")
    )
    publish(spark, setup.settings, setup.db, "rerun-1")
    engine = lake(spark, setup.settings)
    table_version = engine.version(predictions.TABLE)
    before = served(setup, setup.champion)
    published_at = fetch_all(
        setup.admin_url,
        "SELECT published_at FROM precompute.published_runs WHERE run_id = %s",
        ("rerun-1",),
    )

    again = score(
        spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="rerun-1", run_id="rerun-1")
    )
    assert again.already_scored and again.rows_scored == 300
    republished = publish(spark, setup.settings, setup.db, "rerun-1")
    assert republished.already_published and republished.rows_published == 300

    assert engine.version(predictions.TABLE) == table_version
    assert served(setup, setup.champion) == before
    assert (
        fetch_all(
            setup.admin_url,
            "SELECT published_at FROM precompute.published_runs WHERE run_id = %s",
            ("rerun-1",),
        )
        == published_at
    )
    assert run_row(setup, "rerun-1")["state"] == "succeeded"
    # Every attempt is kept, and the stage shows the one that did the work, not the no-op.
    assert fetch_all(
        setup.admin_url,
        "SELECT stage, attempt, state FROM precompute.run_stages "
        "WHERE run_id = %s AND stage IN ('score', 'publish') ORDER BY stage, attempt",
        ("rerun-1",),
    ) == [
        ("publish", 1, "succeeded"),
        ("publish", 2, "skipped"),
        ("score", 1, "succeeded"),
        ("score", 2, "skipped"),
    ]
    assert fetch_all(
        setup.admin_url,
        "SELECT stage, attempt, attempts, state, rows_out FROM analytics.run_stages "
        "WHERE run_id = %s AND stage IN ('score', 'publish') ORDER BY stage",
        ("rerun-1",),
    ) == [("publish", 1, 2, "succeeded", 300), ("score", 1, 2, "succeeded", 300)]


def test_a_score_record_lost_after_the_delta_commit_is_repaired_by_a_rerun(
    spark: Any, setup: Setup
) -> None:
    ingest_batch(spark, setup, "lost-1", customers(120, seed=16, first_id=600_000, label=False))
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="lost-1", run_id="lost-1"))
    scored_at = run_scored_at(setup, "lost-1")
    # As if the database had gone away right after the Delta commit.
    fetch_all(
        setup.admin_url,
        "UPDATE precompute.runs SET rows_scored = NULL, scored_at = NULL, "
        "predictions_version = NULL, model_version_id = NULL WHERE run_id = 'lost-1'",
    )
    again = score(
        spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="lost-1", run_id="lost-1")
    )
    assert again.already_scored and again.rows_scored == 120
    assert run_scored_at(setup, "lost-1") == scored_at
    assert publish(spark, setup.settings, setup.db, "lost-1").rows_published == 120


def test_a_later_batch_upserts_new_and_changed_entities(spark: Any, setup: Setup) -> None:
    first = customers(500, seed=4, first_id=20_000, label=False)
    ingest_batch(spark, setup, "ups-1", first)
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="ups-1", run_id="ups-1"))
    publish(spark, setup.settings, setup.db, "ups-1")
    before = served(setup, setup.champion)

    # 200 of the same customers with new features, and 100 new ones.
    second = customers(300, seed=5, first_id=20_300, label=False)
    ingest_batch(spark, setup, "ups-2", second)
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="ups-2", run_id="ups-2"))
    result = publish(spark, setup.settings, setup.db, "ups-2")
    assert (result.strategy, result.rows_published) == ("upsert", 300)

    after = served(setup, setup.champion)
    assert len(after) == len(before) + 100
    want = expected_scores(setup, setup.champion, second)
    for entity, value in want.items():
        assert after[entity][0] == value and after[entity][2] == "ups-2"
    untouched = set(before) - set(want)
    assert all(after[e] == before[e] for e in untouched)
    count = fetch_all(
        setup.admin_url,
        "SELECT row_count, last_run_id FROM precompute.serving_versions "
        "WHERE model_version_id = %s",
        (setup.champion.version_id,),
    )
    assert count == [(len(after), "ups-2")]

    # A batch at least half the size of what is served is merged into a new partition instead;
    # to a reader the outcome is the same.
    third = customers(3000, seed=6, first_id=20_400, label=False)
    ingest_batch(spark, setup, "ups-3", third)
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="ups-3", run_id="ups-3"))
    result = publish(spark, setup.settings, setup.db, "ups-3")
    assert (result.strategy, result.rows_published) == ("merge", 3000)
    merged = served(setup, setup.champion)
    want = expected_scores(setup, setup.champion, third)
    assert set(merged) == set(after) | set(want)
    assert all(merged[e][0] == v and merged[e][2] == "ups-3" for e, v in want.items())
    assert all(merged[e] == after[e] for e in set(after) - set(want))
    count = fetch_all(
        setup.admin_url,
        "SELECT row_count FROM precompute.serving_versions WHERE model_version_id = %s",
        (setup.champion.version_id,),
    )
    assert count == [(len(merged),)]


def test_a_full_rescore_replaces_the_versions_partition(spark: Any, setup: Setup) -> None:
    ingest_batch(spark, setup, "full-a", customers(400, seed=6, first_id=30_000, label=False))
    # The same customers again, later: a full rescore must read these newer rows.
    newer = customers(400, seed=7, first_id=30_000, label=False)
    ingest_batch(spark, setup, "full-b", newer)

    run = score(
        spark,
        setup.settings,
        setup.db,
        ScoreRequest(MODEL, mode="full", alias="challenger", run_id="full-1"),
    )
    result = publish(spark, setup.settings, setup.db, "full-1")
    assert result.strategy == "swap"
    got = served(setup, setup.challenger)
    assert len(got) == run.rows_scored == result.rows_published
    want = expected_scores(setup, setup.challenger, newer)
    assert all(got[e][0] == v for e, v in want.items())
    assert fetch_all(
        setup.admin_url,
        "SELECT rows_read, rows_scored FROM precompute.runs WHERE run_id = 'full-1'",
    ) == [(None, run.rows_scored)]

    # A second full rescore of the same version swaps the partition wholesale.
    score(
        spark,
        setup.settings,
        setup.db,
        ScoreRequest(MODEL, mode="full", alias="challenger", run_id="full-2"),
    )
    publish(spark, setup.settings, setup.db, "full-2")
    assert {run for _, _, run in served(setup, setup.challenger).values()} == {"full-2"}


def test_a_reader_never_sees_a_half_published_run(spark: Any, setup: Setup) -> None:
    entities = 30_000
    ingest_batch(spark, setup, "conc-1", customers(entities, seed=8, first_id=100_000, label=False))
    ingest_batch(spark, setup, "conc-2", customers(entities, seed=9, first_id=100_000, label=False))
    for run in ("conc-1", "conc-2"):
        score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id=run, run_id=run))
    publish(spark, setup.settings, setup.db, "conc-1")
    states: list[tuple[tuple[str, int], ...]] = []
    stop = threading.Event()

    def poll() -> None:
        connection = database.connect(setup.reader_url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute(
                        "SELECT run_id, count(*) FROM precompute.predictions "
                        "WHERE model_version_id = %s AND entity_id >= 'c100000' "
                        "AND entity_id < 'c130000' AND run_id LIKE 'conc-%%' "
                        "GROUP BY run_id ORDER BY run_id",
                        (setup.champion.version_id,),
                    )
                    states.append(tuple(cursor.fetchall()))
        finally:
            connection.close()

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        assert publish(spark, setup.settings, setup.db, "conc-2").strategy == "merge"
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
    # 'c100000' <= id < 'c130000' as text holds exactly the 30,000 ids of the batch.
    seen = set(states)
    assert seen <= {(("conc-1", entities),), (("conc-2", entities),)}, seen
    assert (("conc-2", entities),) in seen and len(states) > 5


def test_a_killed_publish_leaves_serving_unchanged_and_a_retry_completes(
    spark: Any, setup: Setup
) -> None:
    ingest_batch(spark, setup, "kill-0", customers(200, seed=10, first_id=200_000, label=False))
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="kill-0", run_id="kill-0"))
    publish(spark, setup.settings, setup.db, "kill-0")
    ingest_batch(spark, setup, "kill-1", customers(200_000, seed=11, first_id=200_000, label=False))
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="kill-1", run_id="kill-1"))
    before = served(setup, setup.champion)

    env = os.environ | {
        "DATABASE_URL": setup.admin_url,
        "PRECOMPUTE_LAKE_URI": setup.settings.lake_uri,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", "publish", "--run-id", "kill-1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    table = serving_store.staging("kill-1").name
    deadline = time.time() + 120
    while time.time() < deadline and not fetch_all(
        setup.admin_url,
        "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s",
        (f'COPY "staging"."{table}"%',),
    ):
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"

    assert served(setup, setup.champion) == before
    assert (
        fetch_all(
            setup.admin_url, "SELECT 1 FROM precompute.published_runs WHERE run_id = 'kill-1'"
        )
        == []
    )
    result = publish(spark, setup.settings, setup.db, "kill-1")
    assert result.rows_published == 200_000
    after = served(setup, setup.champion)
    batch = {f"c{i}" for i in range(200_000, 400_000)}
    assert {e for e, (_, _, run) in after.items() if run == "kill-1"} == batch
    assert all(after[e] == value for e, value in before.items() if e not in batch)
    assert fetch_all(
        setup.admin_url,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging' AND tablename = %s",
        (table,),
    ) == [(0,)]


def test_promote_and_rollback_switch_lookups_without_a_republish(spark: Any, setup: Setup) -> None:
    batch = customers(100, seed=12, first_id=300_000, label=False)
    ingest_batch(spark, setup, "prom-1", batch)
    for version in (setup.champion, setup.challenger):
        run = f"prom-1-v{version.version}"
        score(
            spark,
            setup.settings,
            setup.db,
            ScoreRequest(MODEL, batch_id="prom-1", version=version.version, run_id=run),
        )
        publish(spark, setup.settings, setup.db, run)
    lookup = (
        "SELECT version, score FROM analytics.current_predictions "
        "WHERE model = %s AND entity_id = 'c300007'"
    )
    published = fetch_all(setup.admin_url, "SELECT count(*) FROM precompute.published_runs")
    tree = expected_scores(setup, setup.challenger, batch)["c300007"]
    logistic = expected_scores(setup, setup.champion, batch)["c300007"]
    assert fetch_all(setup.reader_url, lookup, (MODEL,)) == [(1, logistic)]

    registry = Registry(setup.db)
    try:
        registry.promote(MODEL, from_alias="challenger")
        assert fetch_all(setup.reader_url, lookup, (MODEL,)) == [(2, tree)]
        registry.rollback(MODEL)
        assert fetch_all(setup.reader_url, lookup, (MODEL,)) == [(1, logistic)]
    finally:
        registry.move_aliases(MODEL, {"champion": 1})
    assert fetch_all(setup.admin_url, "SELECT count(*) FROM precompute.published_runs") == published


def test_counts_that_do_not_add_up_fail_the_run_and_publish_nothing(
    spark: Any, setup: Setup
) -> None:
    ingest_batch(spark, setup, "mis-1", customers(100, seed=13, first_id=400_000, label=False))
    # Ingest recorded 100 accepted rows; pretend it recorded 99.
    fetch_all(
        setup.admin_url,
        "UPDATE precompute.runs SET rows_read = 99, rows_accepted = 99 WHERE run_id = 'mis-1'",
    )
    engine = lake(spark, setup.settings)

    def version() -> int | None:
        return engine.version(predictions.TABLE) if engine.exists(predictions.TABLE) else None

    table_before = version()
    with pytest.raises(
        CountMismatch, match="99 accepted rows recorded by ingest and 0 score requests, but 100"
    ):
        score(
            spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="mis-1", run_id="mis-1")
        )
    assert version() == table_before
    run = run_row(setup, "mis-1")
    assert run["state"] == "failed" and "score: run mis-1" in run["error"]

    # A publish whose scored count disagrees with what it would publish rolls back.
    ingest_batch(spark, setup, "mis-2", customers(100, seed=14, first_id=400_000, label=False))
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="mis-2", run_id="mis-2"))
    before = served(setup, setup.champion)
    fetch_all(
        setup.admin_url, "UPDATE precompute.runs SET rows_scored = 101 WHERE run_id = 'mis-2'"
    )
    with pytest.raises(CountMismatch, match="101 rows were scored"):
        publish(spark, setup.settings, setup.db, "mis-2")
    assert served(setup, setup.champion) == before
    assert run_row(setup, "mis-2")["state"] == "failed"


def test_bad_requests_are_refused_with_what_is_wrong(spark: Any, setup: Setup) -> None:
    with pytest.raises(ScoreInputError, match="batch 'never' was not ingested"):
        score(
            spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id="never", run_id="bad-1")
        )
    with pytest.raises(ScoreInputError, match="needs --batch-id"):
        score(spark, setup.settings, setup.db, ScoreRequest(MODEL))
    with pytest.raises(PublishInputError, match="no run 'nobody'"):
        publish(spark, setup.settings, setup.db, "nobody")
    with pytest.raises(PublishInputError, match="has not been scored"):
        publish(spark, setup.settings, setup.db, "bad-1")  # recorded, failed at score


def test_a_score_request_goes_from_submission_to_done_through_a_real_run(
    spark: Any, setup: Setup, tmp_path: Path
) -> None:
    import http.server
    import json as jsonlib

    import httpx
    from conftest import created_key, run_cli, serve_api

    from jobs import callbacks

    received: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    # Callbacks to this machine are refused unless allowed, in the API and in the deliverer.
    env = os.environ | {
        "DATABASE_URL": setup.admin_url,
        "PRECOMPUTE_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
    }
    settings = setup.settings.model_copy(update={"callback_allowed_hosts": ["127.0.0.1"]})
    key = created_key(
        run_cli(
            "api-key",
            "create",
            "app",
            "--scope",
            "score-requests:write",
            "--scope",
            "predictions:read",
            env=env,
        )
    )
    auth = {"Authorization": f"Bearer {key}"}
    new_customer = customers(1, seed=18, first_id=800_000, label=False)
    features = {
        name: new_customer.column(name)[0].as_py()
        for name in new_customer.column_names
        if name not in ("customer_id", "updated_at")
    }
    batch = customers(50, seed=17, first_id=700_000, label=False)
    try:
        with serve_api(env, tmp_path / "api.log") as base:
            ids = []
            for entity, target in (
                ("c800000", f"http://127.0.0.1:{receiver.server_port}/done"),
                ("c700003", "http://127.0.0.1:9/nobody-listens"),  # also in the batch
            ):
                response = httpx.post(
                    f"{base}/v1/score-requests",
                    headers=auth,
                    json={
                        "model": MODEL,
                        "entity_id": entity,
                        "features": features,
                        "callback_url": target,
                    },
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["request_id"])
            status = httpx.get(f"{base}/v1/score-requests/{ids[0]}", headers=auth).json()
            assert status["state"] == "pending"

            ingest_batch(spark, setup, "req-b", batch)
            result = score(
                spark,
                setup.settings,
                setup.db,
                ScoreRequest(MODEL, batch_id="req-b", run_id="req-b"),
            )
            assert result.rows_scored == 51  # 50 batch rows and the new customer
            assert fetch_all(
                setup.admin_url,
                "SELECT rows_accepted, rows_requested, rows_scored FROM precompute.runs "
                "WHERE run_id = 'req-b'",
            ) == [(50, 1, 51)]
            assert (
                httpx.get(f"{base}/v1/score-requests/{ids[0]}", headers=auth).json()["state"]
                == "scoring"
            )
            publish(spark, settings, setup.db, "req-b")

            done = httpx.get(f"{base}/v1/score-requests/{ids[0]}", headers=auth).json()
            want = expected_scores(
                setup,
                setup.champion,
                new_customer.set_column(0, "customer_id", pa.array(["c800000"])),
            )["c800000"]
            assert (done["state"], done["version"], done["run_id"]) == ("done", 1, "req-b")
            assert done["score"] == want
            served_now = httpx.get(
                f"{base}/v1/predictions/c800000", headers=auth, params={"model": MODEL}
            ).json()
            assert served_now["score"] == want
            overlap = httpx.get(f"{base}/v1/score-requests/{ids[1]}", headers=auth).json()
            batch_score = expected_scores(setup, setup.champion, batch)["c700003"]
            assert (overlap["state"], overlap["score"]) == ("done", batch_score)
    finally:
        receiver.shutdown()

    # The callback that could be delivered was, at publish; the other is retried, then given up.
    assert [(r["request_id"], r["score"]) for r in received] == [(ids[0], want)]
    state = (
        "SELECT callback_state, callback_attempts FROM precompute.score_requests "
        "WHERE request_id = %s"
    )
    assert fetch_all(setup.admin_url, state, (ids[1],)) == [("pending", 1)]
    time.sleep(settings.callback_backoff_seconds + 0.1)
    twice = settings.model_copy(update={"callback_max_attempts": 2})
    policy = callbacks.CallbackPolicy.from_settings(twice)
    assert callbacks.deliver_due(setup.db, policy) == callbacks.Delivery(0, 0, 1)
    assert fetch_all(setup.admin_url, state, (ids[1],)) == [("failed", 2)]


def test_a_poisoned_request_and_hostile_receivers_fail_alone_and_the_run_succeeds(
    spark: Any, setup: Setup
) -> None:
    from psycopg2.extras import Json
    from receivers import Receiver, garbage, never_answers, redirects

    hostile = [Receiver(never_answers), Receiver(garbage), Receiver(redirects)]
    settings = setup.settings.model_copy(
        update={"callback_allowed_hosts": ["127.0.0.1"], "callback_timeout_seconds": 1.0}
    )
    writer = database.with_role(setup.admin_url, "writer", setup.settings)
    new = customers(3, seed=19, first_id=900_000, label=False)
    features = [
        {
            n: new.column(n)[i].as_py()
            for n in new.column_names
            if n not in ("customer_id", "updated_at")
        }
        for i in range(3)
    ]

    def submit(entity_id: str, values: dict[str, Any], callback_url: str) -> str:
        """As the API stores a request it accepted."""
        rows = fetch_all(
            writer,
            "INSERT INTO precompute.score_requests (model_id, entity_id, features, callback_url) "
            "SELECT model_id, %s, %s, %s FROM precompute.models WHERE name = %s "
            "RETURNING request_id",
            (entity_id, Json(values), callback_url, MODEL),
        )
        return str(rows[0][0])

    good = [submit(f"c90000{i}", features[i], receiver.url()) for i, receiver in enumerate(hostile)]
    # Within the contract's rules (support_calls has no maximum), beyond what a long holds.
    poison = submit("c900009", features[0] | {"support_calls": 2**64}, hostile[0].url("/p"))
    try:
        scored = score(
            spark, settings, setup.db, ScoreRequest(MODEL, mode="requests", run_id="req-hostile")
        )
        published = publish(spark, settings, setup.db, "req-hostile")
    finally:
        for receiver in hostile:
            receiver.close()

    assert (scored.rows_scored, published.rows_published) == (3, 3)
    assert run_row(setup, "req-hostile")["state"] == "succeeded"
    assert fetch_all(
        setup.admin_url,
        "SELECT state FROM precompute.run_stages "
        "WHERE run_id = 'req-hostile' AND stage = 'publish'",
    ) == [("succeeded",)]
    state = (
        "SELECT state, error, callback_state, callback_attempts, callback_error "
        "FROM precompute.score_requests WHERE request_id = %s"
    )
    (failed,) = fetch_all(setup.admin_url, state, (poison,))
    assert failed[0] == "failed" and failed[2] == "none"
    assert "support_calls: must be a long written as a whole number within 64 bits" in failed[1]
    for request_id, says in zip(
        good, ("no complete reply", "not HTTP", "redirects are not followed"), strict=True
    ):
        ((done, error, callback, attempts, why),) = fetch_all(setup.admin_url, state, (request_id,))
        assert (done, error, callback, attempts) == ("done", None, "pending", 1)
        assert says in why
    assert [len(r.requests) for r in hostile] == [1, 1, 1]  # the poisoned one was never posted


def test_a_promotion_during_prune_waits_and_never_leaves_an_alias_on_a_dropped_version(
    setup: Setup,
) -> None:
    # v1 (champion) and v2 (challenger) are served; with champion moved to v2, a prune keeping
    # one version would drop v1 - unless an alias moves back onto v1 before the drop.
    registry = Registry(setup.db)
    registry.move_aliases(MODEL, {"challenger": None, "champion": 2})
    url = database.database_url(setup.settings, "writer")
    promoter = database.connect(url)
    try:
        with promoter.cursor() as cur:  # a promotion of v1, in flight: the lock promote takes
            cur.execute(
                "SELECT model_id FROM precompute.models WHERE name = %s FOR UPDATE", (MODEL,)
            )
            cur.execute(
                "UPDATE precompute.model_aliases a SET version_id = v.version_id "
                "FROM precompute.model_versions v WHERE v.model_id = a.model_id "
                "AND v.version = 1 AND a.alias = 'champion'"
            )
        pruned: list[Any] = []
        pruning = threading.Thread(
            target=lambda: pruned.extend(serving_prune.prune(url, "", keep=1))
        )
        pruning.start()
        pruning.join(timeout=2)
        assert pruning.is_alive(), "prune went ahead while a promotion held the model"
        promoter.commit()  # champion -> v1
        pruning.join(timeout=30)
        assert not pruning.is_alive()
        assert [(r.model, r.version) for r in pruned] == []  # v1 is the champion again: kept
        assert served(setup, setup.champion) != {}
    finally:
        promoter.close()
        registry.move_aliases(MODEL, {"champion": 1, "challenger": 2})


def test_prune_keeps_the_newest_and_every_aliased_version(setup: Setup) -> None:
    # Earlier tests published v1 (champion) and v2 (challenger).
    registry = Registry(setup.db)
    registry.move_aliases(MODEL, {"challenger": None})
    url = database.database_url(setup.settings, "writer")
    try:
        # v2 is the newest served version and v1 is champion: nothing goes.
        assert serving_prune.prune(url, "", keep=1) == []
        # With champion on v2, v1 is neither aliased nor among the newest one: it goes.
        registry.move_aliases(MODEL, {"champion": 2})
        removed = serving_prune.prune(url, "", keep=1)
        assert [(r.model, r.version) for r in removed] == [(MODEL, 1)]
        assert served(setup, setup.champion) == {}
        assert served(setup, setup.challenger) != {}
    finally:
        registry.move_aliases(MODEL, {"champion": 1, "challenger": 2})


def test_ids_that_cannot_be_served_are_left_out_of_a_publish_not_blocking_it(
    spark: Any, setup: Setup
) -> None:
    """Predictions whose entity id PostgreSQL or lookups cannot take (a NUL byte, a control
    character, too long), as a lake written before ingest refused such ids may hold."""
    run_id = "legacy-ids"
    version = setup.champion
    scored_at = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
    ids = ["ok-1", "nul\x00id", "ok-2", "bell\x07", "x" * 300]
    rows = spark.createDataFrame([(i, 0.5, "true", None) for i in ids], predictions.SCORED_SCHEMA)
    target = predictions.target(MODEL, version.version_id, run_id, scored_at)
    lake(spark, setup.settings).append(rows, target, Txn(f"precompute.score:{run_id}"))
    recorder = RunRecorder(
        setup.db, run_id, "full", None, lease_seconds=setup.settings.stage_lease_seconds
    )
    recorder.start_stage("score")
    recorder.record_score(version.version_id, scored_at, 0, len(ids))
    recorder.finish_stage("score", "succeeded")

    result = publish(spark, setup.settings, setup.db, run_id)

    assert result.rows_published == 2
    record = run_row(setup, run_id)
    assert (record["state"], record["rows_published"], record["rows_unpublished"]) == (
        "succeeded",
        2,
        3,
    )
    assert {e for e, (_, _, r) in served(setup, version).items() if r == run_id} == {"ok-1", "ok-2"}
    [(count, detail)] = fetch_all(
        setup.admin_url,
        "SELECT value, detail FROM precompute.run_metrics "
        "WHERE run_id = %s AND name = 'unpublished_ids'",
        (run_id,),
    )
    assert count == 3 and "'nul\\x00id'" in detail["examples"]
