"""`precompute demo` (`make demo`): the main job end to end on the embedded defaults.

Database and migrations; a labelled training table in the lake; the warm Spark driver; Airflow
standalone; a model trained by triggering the train_model DAG through Airflow's REST API, as
the UI's Trigger button does; then a batch of 1M customers (a few percent bad rows) lands in the
landing folder and Airflow's landing watcher starts the score_batch DAG by itself; then the
lookup API, sample lookups and an analyst's SQL query. Run again, it reuses everything that is
already there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobs.airflow_environment import airflow_environment, api_server_environment
from jobs.warm_driver import driver_healthy
from local.airflow_rest import Airflow
from local.embedded_pg import embedded_server
from local.http import call, healthy
from local.landing import land_batch
from local.processes import service
from lookup_api.core import keys
from precompute import database, migrations, names
from precompute.errors import PrecomputeError
from precompute.private_files import write_private
from precompute.settings import Settings

MODEL = "churn"
DATASET = "customers"
BATCH = "demo-0001"
BATCH_ROWS = 1_000_000
BATCH_FILES = 4
BAD_SHARE = 0.03
TRAINING_ROWS = 50_000
TRAINING_TABLE = f"training/{DATASET}"


@dataclass(frozen=True)
class Platform:
    """The running platform, as the demo and the freshness benchmark use it."""

    db: database.Database
    airflow: Airflow
    champion: int
    api: str
    key: str


def start_platform(settings: Settings, step: Callable[[str], None]) -> Platform:
    """Database, training data, warm driver, Airflow, a champion (trained through the
    train_model DAG when there is none), the lookup API and a key: each reused if running."""
    step(f"database: {_database(settings)}")
    db = database.Database.from_settings(settings)  # once the embedded server has its password
    step(_training_data(settings))
    step(_warm_driver(settings))
    airflow = _airflow(settings, step)
    champion = _champion(db)
    if champion is None:
        step("training the model: train_model DAG, triggered through the REST API")
        _run_dag(airflow, "train_model", {"table": TRAINING_TABLE, "promote": True}, step)
        champion = _champion(db)
        if champion is None:
            raise PrecomputeError(
                f"train_model succeeded but {MODEL} has no champion to score with"
            )
    else:
        step(f"model: {MODEL} has a champion (v{champion}); not retrained")
    api, key = _lookup_api(settings, db)
    step(f"lookup API: {api}")
    return Platform(db, airflow, champion, api, key)


def run(settings: Settings) -> int:
    started = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    platform = start_platform(settings, step)
    airflow = platform.airflow
    run_id = names.run_id("incremental", MODEL, platform.champion, BATCH)
    folder = Path(settings.landing_root) / BATCH
    if _run_state(platform.db, run_id) == "succeeded":
        step(f"batch {BATCH}: already scored and published (run {run_id})")
    elif folder.is_dir():  # landed by an earlier demo that stopped before it was scored
        step(f"scoring batch {BATCH}: score_batch DAG, triggered through the REST API")
        _run_dag(airflow, "score_batch", {"input_path": str(folder), "batch_id": BATCH}, step)
    else:
        known = {r["dag_run_id"] for r in airflow.runs("score_batch")}
        landed = _land_sample_batch(folder)
        step(f"batch {BATCH} landed in {folder} ({BATCH_ROWS:,} rows, {BAD_SHARE:.0%} bad)")
        run = airflow.new_run("score_batch", known, timeout=120)
        step(
            f"score_batch: run {run['dag_run_id']} started by the landing watcher "
            f"{time.time() - landed:.1f} s after the batch landed"
        )
        airflow.wait("score_batch", run["dag_run_id"], lambda t: step(f"  score_batch {t}"))
        step(f"batch {BATCH}: served {time.time() - landed:.1f} s after it landed")
    _show(settings, platform, run_id, time.monotonic() - started)
    return 0


def _database(settings: Settings) -> str:
    state = "external (DATABASE_URL)"
    if settings.embedded_database:
        state = str(embedded_server(settings).start())
    report = migrations.migrate(database.admin_url(settings), settings)
    return f"{state}; migrations: {len(report.applied)} applied now"


def _training_data(settings: Settings) -> str:
    """The labelled training table, unless it exists."""
    # deltalake and numpy take a second to import, and every `precompute` command imports
    # this module: only the demo's first run writes sample data.
    from deltalake import DeltaTable, write_deltalake

    from jobs.sample_data import customers

    training = f"{settings.lake_uri.rstrip('/')}/{TRAINING_TABLE}"
    if DeltaTable.is_deltatable(training):
        return f"training table {TRAINING_TABLE}: already there"
    write_deltalake(training, customers(TRAINING_ROWS, seed=1), mode="overwrite")
    return f"training table {TRAINING_TABLE}: {TRAINING_ROWS:,} labelled rows"


def _land_sample_batch(folder: Path) -> float:
    """Write the incoming batch and land it whole; the time it landed."""
    from jobs.sample_data import customers, with_bad_rows  # numpy: only when a batch is made

    part = BATCH_ROWS // BATCH_FILES
    tables = [
        with_bad_rows(
            customers(part, seed=100 + i, first_id=i * part, label=False), int(part * BAD_SHARE)
        )
        for i in range(BATCH_FILES)
    ]
    return land_batch(folder, tables)


def _warm_driver(settings: Settings) -> str:
    """The warm Spark driver the DAGs' Spark tasks hand their jobs to."""
    driver = service(settings, "spark-driver")
    if driver.pid() is None or not driver_healthy(settings):
        driver.stop()
        driver.start([sys.executable, "-m", "cli", "spark-driver"], os.environ)
        driver.wait_healthy(f"http://127.0.0.1:{settings.spark_driver_port}/health", 180)
    return f"warm Spark driver: up on 127.0.0.1:{settings.spark_driver_port} (log {driver.log})"


def _airflow(settings: Settings, report: Callable[[str], None]) -> Airflow:

    airflow = service(settings, "airflow")
    base = f"http://127.0.0.1:{settings.airflow_port}"
    if airflow.pid() is None or not healthy(base + "/api/v2/monitor/health"):
        airflow.stop()
        env = os.environ | airflow_environment(settings)
        env |= api_server_environment(settings.airflow_port)
        airflow.start([str(Path(sys.executable).parent / "airflow"), "standalone"], env)
        report(f"airflow: starting standalone (log {airflow.log})")
        airflow.wait_healthy(base + "/api/v2/monitor/health", 180)
    report(f"airflow: up at {base}")
    client = Airflow(base, "admin", _airflow_password(settings))
    for dag_id in ("train_model", "score_batch"):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    return client


def _airflow_password(settings: Settings) -> str:
    generated = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    password: str = json.loads(generated.read_text())["admin"]
    return password


def _run_dag(
    airflow: Airflow, dag_id: str, conf: dict[str, object], report: Callable[[str], None]
) -> None:
    run_id = airflow.trigger(dag_id, conf)
    report(f"{dag_id}: run {run_id}")
    airflow.wait(dag_id, run_id, lambda text: report(f"  {dag_id} {text}"))


def _champion(db: database.Database) -> int | None:
    rows = db.fetch(
        "reader",
        "SELECT v.version FROM precompute.model_aliases a JOIN precompute.models m "
        "USING (model_id) JOIN precompute.model_versions v USING (version_id) "
        "WHERE m.name = %s AND a.alias = 'champion'",
        (MODEL,),
    )
    return int(str(rows[0][0])) if rows else None


def _run_state(db: database.Database, run_id: str) -> str | None:
    sql = "SELECT state FROM precompute.runs WHERE run_id = %s"
    rows = db.fetch("reader", sql, (run_id,))
    return str(rows[0][0]) if rows else None


def _lookup_api(settings: Settings, db: database.Database) -> tuple[str, str]:
    """The API's address and a key for the demo (made once, kept in var/demo)."""

    base = f"http://127.0.0.1:{settings.api_port}"
    api = service(settings, "lookup-api")
    if api.pid() is None or not healthy(base + "/readyz"):
        api.stop()
        api.start([sys.executable, "-m", "cli", "api"], os.environ)
        api.wait_healthy(base + "/readyz", 60)
    key_file = settings.var_dir / "demo" / "api-key"
    if not key_file.is_file():
        key, _ = keys.create(db.url("writer"), db.hint, "demo", (keys.READ,))
        key_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(key_file, key)
    return base, key_file.read_text().strip()


def _get(url: str, key: str, body: dict[str, list[str]] | None = None) -> str:
    answer = call("POST" if body else "GET", url, body, token=key, timeout=10)
    return answer.text() if answer.ok else f"{answer.status}: {answer.text()}"


def _show(settings: Settings, platform: Platform, run_id: str, seconds: float) -> None:
    db, api, key = platform.db, platform.api, platform.key
    [(state, read, quarantined, published)] = db.fetch(
        "reader",
        "SELECT state, rows_read, rows_quarantined, rows_published FROM analytics.runs "
        "WHERE run_id = %s",
        (run_id,),
    )
    key_file = settings.var_dir / "demo" / "api-key"
    curl = 'curl -H "Authorization: Bearer $KEY"'
    lookups = [
        (f"/v1/predictions/c{BATCH_ROWS - 1}?model={MODEL}", None),
        (f"/v1/predictions/c0?model={MODEL}", None),  # c0 is one of the bad rows: not scored
        (
            f"/v1/predictions:batchGet?model={MODEL}",
            {"ids": [f"c{BATCH_ROWS - 2}", f"c{BATCH_ROWS - 3}", "nobody"]},
        ),
    ]
    print(f"""
Done in {seconds:.0f} s. Run {run_id}: {state}; {read:,} rows read, {quarantined:,} quarantined,
{published:,} predictions published.

Lookups (the demo's API key is in {key_file}):
  KEY=$(cat {key_file})""")
    for path, body in lookups:
        post = f" -X POST -d '{json.dumps(body)}'" if body else ""
        print(f"  {curl}{post} '{api}{path}'")
        print(f"  -> {_get(api + path, key, body)[:300]}")
    query = (
        "SELECT label, count(*), round(avg(score)::numeric, 4) AS mean_score "
        "FROM analytics.current_predictions WHERE model = 'churn' GROUP BY label"
    )
    passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    print(f"""
SQL for analysts (read-only role; the views are described with \\dv+ analytics.*):
  psql "{db.url("reader")}" -c "{query}"

Run report: {api}/v1/runs/{run_id}/report
  in a browser: any user name, the API key as the password
Airflow UI: http://127.0.0.1:{settings.airflow_port}
  user admin, password {_airflow_password(settings)} (kept in {passwords})
Lookup API docs: {api}/docs
Stop everything: precompute down (or make stop)""")
