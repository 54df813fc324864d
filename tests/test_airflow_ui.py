"""Airflow's UI as a user meets it: `airflow standalone` started as `make demo` starts it, driven
by Debian's Chromium (tests/browser.py).

Every DAG must be triggerable from its trigger form with its defaults (issue 14: a Param whose
schema does not admit null is marked required and greys out the Trigger button), a run
triggered from the form must do the work and show the job's own output in the task log, and a
batch that lands under the landing root must start a scoring run by itself (issue 18).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from browser import page
from conftest import Env, dagbag, export_model, free_port, platform_env, warm_driver
from playwright.sync_api import Locator, Page, expect

from jobs.airflow_environment import api_server_environment
from jobs.registration import register
from jobs.run_report import report_url
from jobs.sample_data import customers, with_bad_rows
from local.airflow_rest import Airflow
from local.landing import land_batch
from local.processes import Service
from precompute.database import Database
from precompute.settings import Settings


@dataclass(frozen=True)
class Standalone:
    """A running `airflow standalone`: where it answers and how to sign in."""

    base: str
    log: Path
    username: str
    password: str

    def rest(self) -> Airflow:
        return Airflow(self.base, self.username, self.password)


def start_standalone(env: Env, timeout: float = 240) -> tuple[Service, Standalone]:
    """`airflow standalone` on a free port of 127.0.0.1, in its own process group, with the
    environment `make demo` gives it pointed at `env`, and its own AIRFLOW_HOME under
    `env.root` (not the developer's var/airflow, nor the test session's); once its API answers."""
    home = env.root / "airflow"
    port = free_port()
    variables = env.variables | {
        "AIRFLOW_HOME": str(home),
        **api_server_environment(port),
        # New DAGs start paused, so the daily maintenance DAG cannot run beside the test's run;
        # the trigger form unpauses the DAG it triggers, as a user would see.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }
    server = Service("airflow", env.root / "airflow.pid", env.root / "airflow.log")
    server.start(
        [str(Path(sys.executable).parent / "airflow"), "standalone"], os.environ | variables
    )
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_healthy(base + "/api/v2/monitor/health", timeout)
        # Standalone writes the admin's generated password before its API answers.
        passwords = home / "simple_auth_manager_passwords.json.generated"
        password: str = json.loads(passwords.read_text())["admin"]
    except BaseException:
        server.stop()
        raise
    return server, Standalone(base, server.log, "admin", password)


@pytest.fixture(scope="module")
def env(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    with platform_env(admin_url, settings, tmp_path_factory.mktemp("airflow-ui")) as made:
        yield made


@pytest.fixture(scope="module")
def params() -> dict[str, list[str]]:
    """Every DAG in dags/ and its Params' names, as the files define them."""
    return {dag_id: list(dag.params) for dag_id, dag in dagbag().dags.items()}


@pytest.fixture(scope="module")
def airflow(env: Env) -> Iterator[Standalone]:
    """One Airflow for the module: it takes most of a minute to start on two cores."""
    server, running = start_standalone(env)
    try:
        yield running
    finally:
        server.stop()


def sign_in(page: Page, airflow: Standalone) -> None:
    """Through the simple auth manager's login form, as a user would."""
    page.goto(airflow.base + "/")
    page.get_by_label("Username").fill(airflow.username)
    page.get_by_label("Password").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    expect(page.get_by_role("button", name="User")).to_be_visible()


def open_trigger_form(page: Page, airflow: Standalone, dag_id: str, params: list[str]) -> Locator:
    """The DAG page's Trigger button opens the form as a dialog; returns that dialog once it
    shows a field for each of the DAG's Params (the Trigger button is enabled before the form
    has loaded and validated them)."""
    page.goto(f"{airflow.base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    for name in params:
        # A field's label is the Param's name, followed by a star when it is required.
        label = dialog.locator("label").filter(has_text=re.compile(rf"^{re.escape(name)}\b"))
        expect(label, f"{dag_id}: the form has no field for Param {name}").to_have_count(1)
    return dialog


def assert_triggerable(dialog: Locator, dag_id: str) -> None:
    """What issue 14 saw: optional Params marked required, the Trigger button greyed out."""
    expect(dialog.get_by_test_id("trigger-dag-submit"), dag_id).to_be_enabled()
    invalid = dialog.locator('[data-invalid], [aria-invalid="true"]')
    expect(invalid, f"{dag_id}: a field of the form is marked invalid").to_have_count(0)
    expect(dialog.get_by_text("This field is required"), dag_id).to_have_count(0)


# Params with no sensible default, which a user fills in: the form must ask for them (its
# Trigger button disabled until then), and accept the rest as they are.
REQUIRED = {"register_model": {"bundle_path": "/data/models/churn.zip"}}


def test_every_dag_can_be_triggered_from_its_form_with_its_defaults(
    airflow: Standalone, params: dict[str, list[str]]
) -> None:
    dag_ids = sorted(params)
    assert {"score_batch", "train_model"} <= set(dag_ids)
    rest = airflow.rest()
    for dag_id in dag_ids:  # the DAG processor parses the files after the API answers
        rest.wait_for_dag(dag_id)
    # Tall enough for a whole form: a failure's screenshot shows every field and the button.
    with page("airflow-trigger-forms", viewport={"width": 1280, "height": 2000}) as browsing:
        sign_in(browsing.page, airflow)
        for dag_id in dag_ids:
            dialog = open_trigger_form(browsing.page, airflow, dag_id, params[dag_id])
            for name, value in REQUIRED.get(dag_id, {}).items():
                submit = dialog.get_by_test_id("trigger-dag-submit")
                expect(submit, f"{dag_id}: {name} is required").to_be_disabled()
                dialog.locator(f"#element_{name}").fill(value)
            assert_triggerable(dialog, dag_id)
        assert browsing.refused == []  # the UI loads nothing from the internet


@pytest.fixture(scope="module")
def champion(env: Env) -> None:
    """A champion, fitted here: training through Spark is test_dags' business."""
    train = customers(2000, seed=1)
    _, bundle = export_model(
        env.root, "logistic_regression", train, train.column("churned").to_numpy()
    )
    db = Database.from_settings(env.settings)
    register(db, env.settings.models_root, bundle, "churn", aliases=("champion",))


def test_score_batch_triggered_from_its_form_succeeds_and_its_log_shows_the_job(
    airflow: Standalone, env: Env, params: dict[str, list[str]], champion: None
) -> None:
    # A batch outside the landing root (the landing watcher would start a run of its own for
    # one inside it: the next test's business), named in the form's input_path field.
    batch = env.root / "ui-0001"
    batch.mkdir(parents=True)
    pq.write_table(with_bad_rows(customers(200, seed=3, label=False), bad=4), batch / "p.parquet")
    rest = airflow.rest()
    rest.wait_for_dag("score_batch")

    with page("airflow-score-batch", viewport={"width": 1280, "height": 2000}) as browsing:
        tab = browsing.page
        sign_in(tab, airflow)
        dialog = open_trigger_form(tab, airflow, "score_batch", params["score_batch"])
        # The form names each Param's input element_<name> (its label is not tied to it).
        dialog.locator("#element_input_path").fill(str(batch))
        # New DAGs start paused here: the form's own checkbox unpauses the DAG it triggers.
        expect(
            dialog.get_by_role("checkbox", name="Unpause score_batch on trigger")
        ).to_be_checked()
        # The button is disabled while the form checks what was typed: a click then is lost.
        submit = dialog.get_by_test_id("trigger-dag-submit")
        expect(submit).to_be_enabled(timeout=30_000)
        submit.click()
        # Chakra's toaster can hold the same toast twice while it animates in: any one will do.
        # The trigger is a write, which may wait up to a minute for SQLite's lock under load.
        expect(tab.get_by_text("Dag Run Triggered").first).to_be_visible(timeout=90_000)

        [run] = rest.runs("score_batch")
        assert run["triggered_by"] == "ui" and run["conf"]["input_path"] == str(batch), run
        # Each task's state changes are printed: pytest shows them when the test fails.
        rest.wait("score_batch", run["dag_run_id"], print, timeout=600)

        tab.goto(f"{airflow.base}/dags/score_batch/runs/{run['dag_run_id']}/tasks/stages")
        # The log view renders only the lines in sight: its search scrolls to the match.
        tab.get_by_placeholder("Search logs...").fill("rows read")
        # ingest's own summary, with the counts only the job knows (4 rows out of range).
        summary = "batch ui-0001: ingested: 200 rows read, 196 accepted, 4 quarantined"
        # The log loads lazily; the search may highlight the line in more than one element.
        expect(tab.get_by_text(summary).first).to_be_visible(timeout=30_000)
        assert browsing.refused == []


def champion_version(env: Env) -> int:
    rows = Database.from_settings(env.settings).fetch(
        "writer",
        "SELECT v.version FROM precompute.model_aliases a JOIN precompute.model_versions v "
        "USING (version_id) WHERE a.alias = 'champion'",
    )
    return int(str(rows[0][0]))


@pytest.fixture
def driver(env: Env) -> Iterator[Service]:
    """The warm driver on the port Airflow's tasks look for it (free until now: the test
    above spark-submitted)."""
    with warm_driver(env) as running:
        yield running


def test_batches_that_land_start_scoring_runs_by_themselves_each_scored_once(
    airflow: Standalone, env: Env, champion: None, driver: Service
) -> None:
    rest = airflow.rest()
    rest.unpause("score_batch")  # the previous test's form unpaused it; alone, this does
    known = {r["dag_run_id"] for r in rest.runs("score_batch")}
    landing = Path(env.settings.landing_root)
    land_batch(landing / "land-1", [customers(100, seed=5, first_id=800_000, label=False)])
    first = rest.new_run("score_batch", known, timeout=120)
    rest.wait("score_batch", first["dag_run_id"], print, timeout=600)
    assert first["run_type"] == "asset_triggered", first
    # Two more land together: both are scored, in landing order, each once, by however many
    # runs the events make (Airflow may fold events queued while a run is active into one).
    land_batch(landing / "land-3", [customers(100, seed=6, first_id=810_000, label=False)])
    land_batch(landing / "land-2", [customers(100, seed=7, first_id=820_000, label=False)])
    db = Database.from_settings(env.settings)
    runs_of = "SELECT batch_id, state FROM precompute.runs WHERE batch_id LIKE 'land-%%'"
    deadline = time.monotonic() + 600
    while len(db.fetch("writer", runs_of)) < 3 or any(
        r["state"] in ("queued", "running") for r in rest.runs("score_batch")
    ):
        assert time.monotonic() < deadline, rest.runs("score_batch")
        time.sleep(2)
    assert sorted(db.fetch("writer", runs_of)) == [
        ("land-1", "succeeded"),
        ("land-2", "succeeded"),
        ("land-3", "succeeded"),
    ]
    order = db.fetch(
        "writer",
        "SELECT r.batch_id FROM precompute.runs r JOIN precompute.run_stages s USING (run_id) "
        "WHERE s.stage = 'ingest' AND r.batch_id LIKE 'land-%%' ORDER BY s.started_at",
    )
    assert [b for (b,) in order] == ["land-1", "land-3", "land-2"]
    ingests = db.fetch(
        "writer",
        "SELECT count(*) FROM precompute.run_stages s JOIN precompute.runs r USING (run_id) "
        "WHERE s.stage = 'ingest' AND s.state = 'succeeded' AND r.batch_id LIKE 'land-%%'",
    )
    assert ingests == [(3,)]  # each once
    assert all(r["state"] == "success" for r in rest.runs("score_batch")), rest.runs("score_batch")
    # The check task links to the run's report: an extra link on the task instance (Airflow's
    # REST API lists it; the UI's task page did not show it as a button) and the address in
    # its log (which the UI shows as a link).
    links = rest._call(
        "GET", f"/api/v2/dags/score_batch/dagRuns/{first['dag_run_id']}/taskInstances/check/links"
    )
    report = report_url(env.settings, f"score-land-1-churn-v{champion_version(env)}")
    assert links["extra_links"] == {"Run report": report}, links
    log = rest._call(
        "GET",
        f"/api/v2/dags/score_batch/dagRuns/{first['dag_run_id']}/taskInstances/check/logs/1",
    )
    assert f"report: {report}" in json.dumps(log), log
    # The Airflow tasks handed their stages to the warm driver, as on the demo's platform.
    assert driver.log.read_text().count("warm driver: stages ended with 0") >= 2
