"""The documented cluster setting on a real Spark standalone master and worker.

The master and the worker are started from pyspark's own `spark-class` on 127.0.0.1; the only
project setting is `PRECOMPUTE_SPARK_MASTER`, as the README says. The `score_batch` DAG then
runs ingest, score and publish with spark-submit against that master: the work runs in the
worker's executors (Python workers with pyarrow, delta-spark from the session's `spark.jars`,
COPY into PostgreSQL from the executors).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pyspark
import pytest
from conftest import Env, airflow_env, export_model, fetch_all, free_port, run_dag, states

from jobs.registration import register
from jobs.sample_data import customers, with_bad_rows
from precompute.database import Database
from precompute.settings import Settings

SPARK_HOME = Path(pyspark.__file__).parent


def wait_for(check: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A standalone master and one worker (2 cores); yields the master URL and the worker's
    work folder, where each application's executors keep their files and logs."""
    root = tmp_path_factory.mktemp("spark-cluster")
    work = root / "work"
    port, ui = free_port(), free_port()
    # The host name of these machines resolves to an unroutable address: stay on loopback.
    env = os.environ | {
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root / "logs"),
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    started = []
    with (root / "master.log").open("w") as master_log, (root / "worker.log").open("w") as log:
        master = subprocess.Popen(
            [
                *(spark_class, "org.apache.spark.deploy.master.Master"),
                *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)),
            ],
            env=env,
            stdout=master_log,
            stderr=subprocess.STDOUT,
        )
        started.append(master)
        url = f"spark://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{ui}/json/").status_code == 200, "master")
            worker = subprocess.Popen(
                [
                    *(spark_class, "org.apache.spark.deploy.worker.Worker", url),
                    *("--host", "127.0.0.1", "--cores", "2", "--memory", "2g"),
                    *("--webui-port", str(free_port()), "--work-dir", str(work)),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started.append(worker)
            wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{ui}/json/").json()["aliveworkers"] == 1,
                "the worker's registration",
            )
            yield url, work
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def env(
    admin_url: str,
    settings: Settings,
    cluster: tuple[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    master, _ = cluster
    # SPARK_LOCAL_IP is this machine's loopback quirk (see the cluster fixture), not a setting
    # of the project: the driver must advertise an address the executors reach.
    extra = {"PRECOMPUTE_SPARK_MASTER": master, "SPARK_LOCAL_IP": "127.0.0.1"}
    with airflow_env(admin_url, settings, tmp_path_factory.mktemp("on-cluster"), extra) as made:
        yield made


def test_score_batch_runs_ingest_score_and_publish_on_the_cluster(
    env: Env, cluster: tuple[str, Path]
) -> None:
    _, work = cluster
    train = customers(2000, seed=1)
    _, bundle = export_model(
        env.root, "random_forest", train, train.column("churned").to_numpy(zero_copy_only=False)
    )
    db = Database.from_settings(env.settings)
    register(db, env.settings.models_root, bundle, "churn", aliases=("champion",))
    batch = Path(env.settings.landing_root) / "c-0001"
    batch.mkdir(parents=True)
    pq.write_table(with_bad_rows(customers(3000, seed=5, label=False), 30), batch / "p.parquet")

    run = run_dag("score_batch", {"input_path": str(batch)})

    assert states(run) == {
        "plan": "success",
        "stages": "success",
        "check": "success",
        "retraining_signal": "skipped",  # PRECOMPUTE_RETRAIN_ON_DRIFT is off
    }
    [(read, quarantined, published)] = fetch_all(
        env.admin_url,
        "SELECT rows_read, rows_quarantined, rows_published FROM precompute.runs "
        "WHERE run_id = 'score-c-0001-churn-v1'",
    )
    assert (read, quarantined, published) == (3000, 30, 2970)
    # The batch was profiled on the worker, by the profile aggregate's JAR.
    [(features, low, high)] = fetch_all(
        env.admin_url,
        "SELECT count(*), min(rows), max(rows) FROM precompute.feature_profiles "
        "WHERE subject = 'batch' AND batch_id = 'c-0001'",
    )
    assert (features, low, high) == (9, 2970, 2970)
    # The stages were one spark-submitted application on the cluster (no warm driver runs
    # here); its executors ran on the worker, which fetched delta-spark and the profile
    # aggregate from the driver (spark.jars), and wrote their logs.
    applications = sorted(work.glob("app-*"))
    assert len(applications) >= 1, applications
    for app in applications:
        assert list(app.glob("*/delta-spark_*.jar")), f"{app.name}: no Delta JAR on the executor"
        assert list(app.glob("*/precompute-profile.jar")), f"{app.name}: no profile JAR there"
        logs = "".join(p.read_text(errors="replace") for p in app.glob("*/stderr"))
        assert "ModuleNotFoundError" not in logs, f"{app.name}: {logs[-2000:]}"
