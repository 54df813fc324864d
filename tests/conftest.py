"""Fixtures shared by the tests: the real embedded PostgreSQL and fresh databases on it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from jobs.airflow_environment import airflow_environment
from jobs.model_kinds import feature_layout
from local.embedded_pg import embedded_server
from precompute import database
from precompute.settings import Settings, get_settings

# Airflow reads its home when first imported: give the test session its own, before any test
# imports it (its SQLite metadata database is made by the DAG tests' fixture).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="precompute-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
DAGS = Path(__file__).resolve().parents[1] / "dags"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real `precompute` command line in a child process with this environment."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def serve_api(env: dict[str, str], log: Path) -> Iterator[str]:
    """A real lookup API (`precompute api`, uvicorn) in a child process; yields its base URL."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # The lookup log's spool next to the server's log, unless the test chose: never var/'s.
    env = {"PRECOMPUTE_LOOKUP_LOG_DIR": str(log.parent / "lookup-log")} | env
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError(f"the API did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def created_key(result: subprocess.CompletedProcess[str]) -> str:
    """The key `precompute api-key create` printed on its last line."""
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def fetch_all(
    url: str, statement: str, params: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection and return its rows (empty if it has none)."""
    conn = database.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def create_database(admin_url: str, name: str) -> str:
    """Create a database on the server; returns its admin URL."""
    execute_autocommit(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop it on a new connection: a test may have restarted the server since it was made."""
    execute_autocommit(
        admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def execute_autocommit(url: str, statement: Any) -> None:
    conn = database.connect(url)
    conn.autocommit = True  # CREATE and DROP DATABASE refuse to run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def admin_url(settings: Settings) -> str:
    """The admin URL of the project's server, started here if `make test` did not."""
    if settings.embedded_database:
        embedded_server(settings).start()
    return database.admin_url(settings)


@pytest.fixture
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database on the real server, dropped afterwards; yields its admin URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create_database(admin_url, name)
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin_url, name)


@pytest.fixture
def shared_tmp(settings: Settings) -> Iterator[Path]:
    """A temporary folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700
    under root, which that user cannot traverse)."""
    base = settings.var_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=base))
    os.chmod(base, 0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def spark(settings: Settings) -> Iterator[Any]:
    """One real local Spark session for every test that needs one (it takes seconds to start)."""
    from jobs.spark import spark_session

    session = spark_session(settings, "precompute-tests")
    gateway = session.sparkContext._gateway
    assert gateway is not None
    yield session
    session.stop()
    # Close py4j's pooled connections now: left to interpreter exit, each one logs after
    # pytest has closed the log stream ("Logging error ... Closing down clientserver").
    gateway.shutdown()


@pytest.fixture(scope="session")
def jobs_database(admin_url: str, settings: Settings) -> Iterator[str]:
    """A migrated database for job tests (run records), dropped at the end; its admin URL."""
    from precompute import migrations

    name = f"test_jobs_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    migrations.migrate(url, settings)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def settings_under(settings: Settings, jobs_database: str, root: Path) -> Settings:
    """Settings for job tests: their own lake, landing and models folders under `root`, the
    migrated jobs database."""
    from pydantic import SecretStr

    return settings.model_copy(
        update={
            "database_url": SecretStr(jobs_database),
            "lake_uri": str(root / "lake"),
            "landing_root": str(root / "landing"),
            "models_root": str(root / "models"),
        }
    )


@pytest.fixture
def job_settings(settings: Settings, jobs_database: str, tmp_path: Path) -> Settings:
    """Settings for one job test: its own lake under tmp_path, the migrated jobs database."""
    return settings_under(settings, jobs_database, tmp_path)


@dataclass(frozen=True)
class Env:
    """What the DAG tests run against: settings from the environment, the database, a folder,
    and the environment variables that point the jobs and Airflow at them."""

    settings: Settings
    admin_url: str
    root: Path
    variables: dict[str, str]


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def platform_env(
    admin_url: str, settings: Settings, root: Path, variables: dict[str, str] | None = None
) -> Iterator[Env]:
    """A migrated database (dropped afterwards) and a lake, landing and models root under
    `root`; `Env.variables` holds what a process needs to run the jobs and Airflow against
    them (`jobs.airflow_environment` included), plus `variables`. Nothing here
    changes this process's environment."""
    from precompute import migrations

    name = f"test_dags_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    try:
        migrations.migrate(url, settings)
        variables = {
            "DATABASE_URL": url,
            "PRECOMPUTE_LAKE_URI": str(root / "lake"),
            "PRECOMPUTE_LANDING_ROOT": str(root / "landing"),
            "PRECOMPUTE_MODELS_ROOT": str(root / "models"),
            "PRECOMPUTE_SCORE_SCHEDULE": "",
            # A port of its own: the tests' Spark tasks never reach a developer's warm driver
            # (which would refuse them anyway: its settings differ).
            "PRECOMPUTE_SPARK_DRIVER_PORT": str(free_port()),
            **(variables or {}),
        }
        with pytest.MonkeyPatch.context() as patch:
            for key, value in variables.items():  # Settings reads only the environment
                patch.setenv(key, value)
            job_settings = Settings()
        variables |= airflow_environment(job_settings)
        yield Env(job_settings, url, root, variables)
    finally:
        drop_database(admin_url, name)


@contextmanager
def warm_driver(env: Env) -> Iterator[Any]:
    """`precompute spark-driver` for `env`, on its own port, as the demo starts it; the
    DAGs' Spark tasks of that environment hand their jobs to it while it runs."""
    from local.processes import Service

    driver = Service("spark-driver", env.root / "driver.pid", env.root / "driver.log")
    driver.start([sys.executable, "-m", "cli", "spark-driver"], os.environ | env.variables)
    try:
        driver.wait_healthy(f"http://127.0.0.1:{env.settings.spark_driver_port}/health", 180)
        yield driver
    finally:
        driver.stop()


@contextmanager
def airflow_env(
    admin_url: str, settings: Settings, root: Path, variables: dict[str, str] | None = None
) -> Iterator[Env]:
    """`platform_env`, with this process's environment pointing the jobs (spark-submit
    children) and in-process Airflow (`dag.test`) at it, and Airflow's metadata database
    migrated in the test session's Airflow home."""
    with (
        platform_env(admin_url, settings, root, variables) as env,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in env.variables.items():
            if key != "AIRFLOW_HOME":  # chosen above, before Airflow was imported
                patch.setenv(key, value)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        yield env


def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def run_dag(dag_id: str, conf: dict[str, Any]) -> Any:
    """`dag.test()` with the conf; retries off, so a failure shows at once."""
    dag = dagbag().dags[dag_id]
    for t in dag.tasks:
        t.retries = 0
    return dag.test(run_conf=conf)


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def customers_contract() -> Any:
    from precompute.contracts import load_contract

    return load_contract(get_settings().contracts_dir, "customers", 1)


def export_model(
    folder: Path,
    kind: str,
    table: Any,
    target: Any,
    contract: Any = None,
    task: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Any, Path]:
    """Fit the training pipeline on `table`/`target` and write its bundle; (pipeline, path)."""
    # scikit-learn takes seconds to import: only the tests that fit a model pay for it.
    from jobs import modeling
    from jobs.bundle.export import export_bundle

    contract = contract or customers_contract()
    task = task or ("regression" if kind == "linear_regression" else "classification")
    pipeline = modeling.build_pipeline(contract, kind, task, params)  # type: ignore[arg-type]
    frame = modeling.features_frame(table, feature_layout(contract))
    pipeline.fit(frame, target)
    metadata = {
        "model_kind": kind,
        "task": task,
        # A binary model's classes as the churn label names them; more: their own values.
        "classes": (
            ["false", "true"]
            if len(pipeline.classes_) == 2
            else [str(c) for c in pipeline.classes_]
        )
        if task == "classification"
        else None,
        "input_contract": contract.input_schema(),
    }
    path = export_bundle(pipeline, folder / f"{kind}-{task}.zip", kind, metadata)
    return pipeline, path
