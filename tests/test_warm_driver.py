"""The warm driver (`precompute spark-driver`) as the DAGs' Spark tasks use it: a real process
with a real Spark session on a free port, jobs handed to it over HTTP, run records in a real
PostgreSQL database, Delta tables on disk."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import Env, export_model, free_port, platform_env
from conftest import warm_driver as driver_for

from jobs import warm_driver
from jobs.registration import register
from jobs.run_planning import ScorePlan, plan_runs, stages_args
from jobs.sample_data import customers, with_bad_rows
from local.processes import Service
from precompute.database import Database
from precompute.settings import Settings


@pytest.fixture(scope="module")
def env(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    port = {"PRECOMPUTE_SPARK_DRIVER_PORT": str(free_port())}
    with platform_env(admin_url, settings, tmp_path_factory.mktemp("driver"), port) as made:
        yield made


@pytest.fixture(scope="module")
def driver(env: Env) -> Iterator[Service]:
    with driver_for(env) as running:
        yield running
    assert not warm_driver.token_file(env.settings).exists()  # stopping takes the token away


@pytest.fixture(scope="module")
def champion(env: Env) -> None:
    train = customers(2000, seed=1)
    _, bundle = export_model(
        env.root, "logistic_regression", train, train.column("churned").to_numpy()
    )
    db = Database.from_settings(env.settings)
    register(db, env.settings.models_root, bundle, "churn", aliases=("champion",))


def land(env: Env, name: str, rows: int, bad: int) -> Path:
    folder = Path(env.settings.landing_root) / name
    folder.mkdir(parents=True)
    table = with_bad_rows(customers(rows, seed=4, label=False), bad=bad)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def remote(env: Env, job: str, args: list[str]) -> tuple[int | None, list[str]]:
    lines: list[str] = []
    code = warm_driver.run_remote(env.settings, job, args, lines.append)
    return code, lines


def test_a_run_handed_to_the_driver_records_and_publishes_like_spark_submit(
    env: Env, driver: Service, champion: None
) -> None:
    land(env, "w-0001", 300, bad=5)
    plans = plan_runs(env.settings, {"model": "churn"}, "stamp")
    assert [p.batch_id for p in plans] == ["w-0001"]
    code, lines = remote(env, "stages", stages_args(plans))
    assert code == 0, lines
    text = "\n".join(lines)
    assert "batch w-0001: ingested: 300 rows read, 295 accepted, 5 quarantined" in text
    assert "published 295 rows" in text
    [(state, published)] = Database.from_settings(env.settings).fetch(
        "writer",
        "SELECT state, rows_published FROM precompute.runs WHERE run_id = %s",
        (plans[0].run_id,),
    )
    assert (state, published) == ("succeeded", 295)
    # Handed again (a retried task), every stage finds its work done and changes nothing.
    code, lines = remote(env, "stages", stages_args(plans))
    assert code == 0 and "already ingested, nothing to do" in "\n".join(lines), lines


def test_a_failing_job_says_why_and_the_driver_takes_the_next(
    env: Env, driver: Service, champion: None
) -> None:
    [good] = plan_runs(
        env.settings, {"model": "churn", "input_path": str(land(env, "w-2", 50, 0))}, "s"
    )
    missing = ScorePlan(
        **(
            vars(good)
            | {"run_id": "score-w-missing", "batch_id": "w-missing", "input_path": "/nowhere/x"}
        )
    )
    code, lines = remote(env, "stages", stages_args([missing, good]))
    assert code == 1
    assert "error: run score-w-missing failed: input /nowhere/x does not exist" in lines, lines
    # A failed run does not hold up the runs planned after it.
    assert any(line.startswith("  publish (") and "w-2" in line for line in lines), lines
    assert "error: 1 of 2 runs failed: score-w-missing" in lines, lines
    code, lines = remote(env, "stages", stages_args([good]))
    assert code == 0, lines
    # A job's output cannot end it early: only the last line is its exit status (2: the
    # usage error argparse gives for --plans that are not JSON).
    code, lines = remote(env, "stages", ["--plans", "not json\nprecompute-exit: 0"])
    assert code == 2 and any("--plans: not JSON" in line for line in lines), lines


def test_the_driver_refuses_what_is_not_a_job_for_it(env: Env, driver: Service) -> None:
    port = env.settings.spark_driver_port
    token = warm_driver.token_file(env.settings).read_text().strip()
    assert oct(warm_driver.token_file(env.settings).stat().st_mode & 0o777) == "0o600"
    mine = warm_driver.fingerprint(env.settings)

    def post(body: bytes, token: str | None = token, length: int | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if length is not None:  # declared, never sent: refused before it is read
            headers["Content-Length"] = str(length)
        conn.request("POST", "/jobs", body=body, headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status

    job = {"job": "stages", "args": ["--plans", "[]"], "settings": mine}
    assert post(json.dumps(job | {"job": "ingest"}).encode()) == 400  # the DAGs' jobs only
    assert post(json.dumps(job).encode(), token=None) == 401
    assert post(json.dumps(job).encode(), token="guess") == 401
    assert post(json.dumps(job | {"job": "os"}).encode()) == 400  # only the project's jobs
    assert post(b"\xff\xfe not json") == 400
    assert post(b"", length=2 << 20) == 413
    assert post(json.dumps(job | {"settings": "another lake"}).encode()) == 409
    # A client whose settings put data elsewhere is told so, and spark-submits instead.
    elsewhere = env.settings.model_copy(update={"lake_uri": str(env.root / "other-lake")})
    said: list[str] = []
    assert warm_driver.run_remote(elsewhere, "stages", ["--plans", "[]"], said.append) is None
    assert said == [
        f"the warm driver on port {port} runs with other settings or code (restart it): "
        "spark-submit"
    ]
    # With the setting at submit, or with no driver on the port, the tasks spark-submit.
    submit = env.settings.model_copy(update={"spark_driver": "submit"})
    assert warm_driver.run_remote(submit, "stages", ["--plans", "[]"], said.append) is None
    nobody = env.settings.model_copy(update={"spark_driver_port": free_port()})
    assert warm_driver.run_remote(nobody, "stages", ["--plans", "[]"], said.append) is None
    assert warm_driver.driver_healthy(env.settings)
    assert not warm_driver.driver_healthy(elsewhere)  # the demo restarts a driver like that
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", "/jobs", headers={"Content-Length": "lots", "Authorization": f"Bearer {token}"}
    )
    assert conn.getresponse().status == 413  # not a length: refused, the server lives on
    conn.close()
