"""The per-run HTML report as its readers get it: made by real runs (real local Spark, Delta on
disk, the real PostgreSQL), checked against figures computed here independently, served by the
real lookup API and opened in Chromium with the key typed into the browser's prompt.

The module trains two versions once (champion and challenger), runs one incremental batch with
rows quarantined for two reasons, then rescores the same entities with the challenger.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from api_support import Api
from api_support import served as serve
from browser import page
from conftest import fetch_all, run_cli, settings_under
from deltalake import DeltaTable
from playwright.sync_api import HttpCredentials
from pydantic import SecretStr

from jobs.fitting import train
from jobs.ingest import IngestRequest, RejectedShareExceeded, ingest
from jobs.maintenance import remove_old_runs
from jobs.publish import publish
from jobs.run_check import check_run
from jobs.run_report import render_report, report_url, store_report
from jobs.sample_data import customers
from jobs.score import ScoreRequest, score
from jobs.train_request import TrainRequest
from precompute import database
from precompute.database import Database
from precompute.settings import Settings

MODEL = "churn-report"
BATCH = "report-batch"
RESCORE = "report-rescore"


@dataclass(frozen=True)
class Runs:
    settings: Settings
    admin_url: str
    reader_url: str
    champion: int  # version ids
    challenger: int
    check_output: dict[str, str]  # run id -> what its check printed


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, and the text of each heading."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)

    def table(self, *head: str) -> dict[str, list[str]]:
        """The table whose header row starts with `head`, as first cell -> the others."""
        for rows in self.tables:
            if tuple(rows[0][: len(head)]) == head:
                return {row[0]: row[1:] for row in rows[1:]}
        raise AssertionError(f"no table headed {head}: {[t[0] for t in self.tables]}")


def bad_rows(table: pa.Table) -> pa.Table:
    """Rows 0-19 an age over the contract's max (rows 0-4 also a tenure over its max: the same
    reason twice in one row), rows 10-29 an unknown plan: 30 rows, two reasons, 10 with both."""
    age = table.column("age").to_numpy().copy()
    age[:20] = 150.0
    tenure = table.column("tenure_months").to_numpy().copy()
    tenure[:5] = 5000
    plan = table.column("plan").to_pylist()
    plan[10:30] = ["gold"] * 20
    for name, values in (("age", age), ("tenure_months", tenure), ("plan", plan)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table


def write_batch(folder: Path, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


@pytest.fixture(scope="module")
def runs(
    spark: Any,
    settings: Settings,
    jobs_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Runs:
    root = tmp_path_factory.mktemp("run_report")
    job_settings = settings_under(settings, jobs_database, root)
    db = Database.from_settings(job_settings)
    training = write_batch(root / "training", customers(3000, seed=31))
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
        versions.append(train(spark, job_settings, db, request).version.version_id)

    batch = write_batch(
        root / "landing" / BATCH, bad_rows(customers(1500, seed=32, first_id=0, label=False))
    )
    ingest(spark, job_settings, IngestRequest(str(batch), BATCH, "customers", run_id=BATCH))
    score(spark, job_settings, db, ScoreRequest(MODEL, batch_id=BATCH, run_id=BATCH))
    publish(spark, job_settings, db, BATCH)
    rescore = ScoreRequest(MODEL, mode="full", alias="challenger", run_id=RESCORE)
    score(spark, job_settings, db, rescore)
    publish(spark, job_settings, db, RESCORE)
    return Runs(
        job_settings,
        jobs_database,
        database.with_role(jobs_database, "reader", settings),
        versions[0],
        versions[1],
        {},
    )


def checked(runs: Runs, run_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the check once per run (as the DAG's check task does); what it printed."""
    if run_id not in runs.check_output:
        capsys.readouterr()
        check_run(runs.settings, run_id, 0.05, 0.25)
        runs.check_output[run_id] = capsys.readouterr().out
    return runs.check_output[run_id]


def stored(runs: Runs, run_id: str) -> str:
    [(html,)] = fetch_all(
        runs.reader_url, "SELECT html FROM precompute.run_reports WHERE run_id = %s", (run_id,)
    )
    return str(html)


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


def test_the_check_stores_the_report_and_ends_its_log_with_the_address(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = checked(runs, BATCH, capsys)
    assert printed.strip().splitlines()[-1] == f"report: {report_url(runs.settings, BATCH)}"
    assert report_url(runs.settings, BATCH).endswith(f"/v1/runs/{BATCH}/report")
    html = stored(runs, BATCH)
    assert html.startswith("<!DOCTYPE html>")
    # Self-contained: no script, nothing addressed anywhere (its images are data: URLs).
    assert "<script" not in html.lower() and "://" not in html
    images = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)">', html)
    assert len(images) == html.count("<img") >= 5
    for encoded, _ in images:
        assert base64.b64decode(encoded).startswith(b"<svg ")


def test_the_funnel_shows_the_runs_counts(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    checked(runs, BATCH, capsys)
    funnel = Tables(stored(runs, BATCH)).table("step", "rows")
    [counts] = fetch_all(
        runs.admin_url,
        "SELECT rows_read, rows_accepted, rows_quarantined, rows_scored, rows_published "
        "FROM precompute.runs WHERE run_id = %s",
        (BATCH,),
    )
    assert counts == (1500, 1470, 30, 1470, 1470)
    steps = ("read", "accepted", "quarantined", "scored", "published")
    assert {step: number(funnel[step][0]) for step in steps} == dict(
        zip(steps, counts, strict=True)
    )


def test_quarantine_reasons_count_each_reason_once_per_row_as_the_quarantine_holds_them(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    # Independently: the quarantine table as delta-rs reads it, each code once per row.
    quarantine = DeltaTable(f"{runs.settings.lake_uri}/quarantine").to_pyarrow_table(
        filters=[("batch_id", "=", BATCH)]
    )
    expected = Counter(
        code
        for reasons in quarantine.column("reasons").to_pylist()
        for code in {reason["code"] for reason in reasons}
    )
    assert expected == {"out_of_range": 20, "unknown_category": 20}
    [(value, detail)] = fetch_all(
        runs.admin_url,
        "SELECT value, detail FROM precompute.run_metrics "
        "WHERE run_id = %s AND name = 'quarantine_reasons'",
        (BATCH,),
    )
    assert (value, detail) == (30, dict(expected))
    page_ = Tables(stored(runs, BATCH))
    reasons = page_.table("reason", "rows")
    assert {code: int(number(cells[0])) for code, cells in reasons.items()} == dict(expected)
    assert "Quarantined rows by reason" in page_.headings


def test_the_scores_section_shows_the_psi_the_run_recorded(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    [(psi,)] = fetch_all(
        runs.admin_url,
        "SELECT value FROM precompute.run_metrics WHERE run_id = %s AND name = 'psi'",
        (BATCH,),
    )
    html = stored(runs, BATCH)
    assert f"PSI {psi:.4f}</strong>" in html
    assert "Scores against the training reference" in Tables(html).headings


def test_the_stage_timings_show_each_stages_latest_attempt(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    stages = Tables(stored(runs, BATCH)).table("stage", "attempt", "state")
    assert set(stages) == {"ingest", "score", "publish", "check"}
    assert all(cells[1] == "succeeded" for cells in stages.values())
    recorded = dict(
        fetch_all(
            runs.admin_url,
            "SELECT stage, extract(epoch FROM duration)::float8 FROM analytics.run_stages "
            "WHERE run_id = %s",
            (BATCH,),
        )
    )
    assert {stage: number(cells[3]) for stage, cells in stages.items()} == {
        stage: round(seconds, 1) for stage, seconds in recorded.items()
    }


def test_a_rescore_is_compared_with_the_champion_for_the_same_entities(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, RESCORE, capsys)
    served = {
        version: {
            entity: (s, label)
            for entity, s, label in fetch_all(
                runs.reader_url,
                "SELECT entity_id, score, label FROM precompute.predictions "
                "WHERE model_version_id = %s",
                (version,),
            )
        }
        for version in (runs.champion, runs.challenger)
    }
    new, old = served[runs.challenger], served[runs.champion]
    common = sorted(set(new) & set(old))
    assert len(common) == 1470
    diff = np.array([new[e][0] - old[e][0] for e in common])
    changed = np.mean([new[e][1] != old[e][1] for e in common])
    figures = Tables(stored(runs, RESCORE)).table("figure", "value")
    assert figures["entities compared"] == ["1,470"]
    assert figures["mean absolute score difference"] == [f"{np.abs(diff).mean():.4f}"]
    assert figures["mean score difference (this run minus champion)"] == [f"{diff.mean():.4f}"]
    assert figures["largest absolute difference"] == [f"{np.abs(diff).max():.4f}"]
    assert figures["share with a different label"] == [f"{changed:.2%}"]
    html = stored(runs, RESCORE)
    assert "Comparison with the champion" in Tables(html).headings
    assert f"over {len(common):,} entities" in html  # the histogram's alt text


def test_a_run_that_failed_gets_a_report_showing_where_it_stopped(spark: Any, runs: Runs) -> None:
    run_id = "report-rejected"  # 30 of 100 rows rejected: over the limit, ingest fails
    rows = bad_rows(customers(100, seed=33, first_id=5000, label=False))
    folder = write_batch(Path(runs.settings.landing_root) / run_id, rows)
    with pytest.raises(RejectedShareExceeded):
        ingest(spark, runs.settings, IngestRequest(str(folder), run_id, "customers", run_id=run_id))
    html = stored(runs, run_id)
    page_ = Tables(html)
    summary = {row[0]: row[1] for row in page_.tables[0]}
    assert (summary["State"], summary["Stopped at"]) == ("failed", "ingest")
    assert "30 of 100 rows rejected" in html  # the run's error
    stages = page_.table("stage", "attempt", "state")
    assert {stage: cells[1] for stage, cells in stages.items()} == {
        "ingest": "failed",
        "score": "not reached",
        "publish": "not reached",
        "check": "not reached",
    }
    assert page_.table("step", "rows")["quarantined"][0] == "30"
    assert "No scores were recorded for this run." in html


def test_maintenance_removes_a_report_with_its_run(jobs_database: str, settings: Settings) -> None:
    db = Database.from_settings(
        settings.model_copy(update={"database_url": SecretStr(jobs_database)})
    )
    fetch_all(
        jobs_database,
        "INSERT INTO precompute.runs (run_id, mode, batch_id, state, finished_at)"
        " VALUES ('report-old', 'incremental', 'old', 'failed', now() - interval '100 days')",
    )
    html = render_report(db, "report-old")  # a run with no stage, count or model still has one
    assert "No rows were counted" in html and "not reached" in html
    store_report(db, "report-old", html)
    remove_old_runs(db, 90)
    assert fetch_all(
        jobs_database, "SELECT count(*) FROM precompute.run_reports WHERE run_id = 'report-old'"
    ) == [(0,)]


@pytest.fixture(scope="module")
def api(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    log = tmp_path_factory.mktemp("report_api") / "api.log"
    with serve(runs.admin_url, log, keys=("report-reader", "report-submitter")) as api:
        yield api


def test_the_api_serves_the_report_to_a_read_key_as_bearer_or_basic(
    runs: Runs, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    path = f"/v1/runs/{BATCH}/report"
    for answer in (
        api.get(path, api.reader_key),
        httpx.get(api.base + path, auth=("anyone", api.reader_key), timeout=10),
    ):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.text == stored(runs, BATCH)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        policy = answer.headers["content-security-policy"]
        assert policy.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline'")


def test_the_command_line_prints_the_stored_report_or_renders_one(
    runs: Runs, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    printed = run_cli("run", "report", BATCH, env=api.env)
    assert printed.returncode == 0 and printed.stdout == stored(runs, BATCH)
    rendered = run_cli("run", "report", BATCH, "--render", env=api.env)
    assert rendered.returncode == 0 and "<h2>Row funnel</h2>" in rendered.stdout
    unknown = run_cli("run", "report", "no-such-run", env=api.env)
    assert unknown.returncode != 0 and "no-such-run" in unknown.stderr


def test_the_report_route_challenges_for_a_key_and_refuses_others(
    runs: Runs, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    path = f"/v1/runs/{BATCH}/report"
    for answer in (
        api.get(path),
        httpx.get(api.base + path, auth=("anyone", "not-a-key"), timeout=10),
        httpx.get(api.base + path, headers={"Authorization": "Basic %%%"}, timeout=10),
    ):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Basic realm="precompute"'
        assert answer.json()["error"]["code"] in ("unauthenticated", "invalid_key")
    forbidden = api.get(path, api.submit_key)  # score-requests:write only
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    missing = api.get("/v1/runs/no-such-run/report", api.reader_key)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_report"


def test_the_report_opens_in_a_browser_with_nothing_loaded_from_outside(
    runs: Runs, api: Api, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    checked(runs, BATCH, capsys)
    credentials: HttpCredentials = {"username": "analyst", "password": api.reader_key}
    with page("run-report", credentials=credentials) as browsing:
        errors: list[str] = []
        browsing.page.on("pageerror", lambda error: errors.append(str(error)))
        browsing.page.on(
            "console", lambda note: errors.append(note.text) if note.type == "error" else None
        )
        answer = browsing.page.goto(f"{api.base}/v1/runs/{BATCH}/report", wait_until="load")
        assert answer is not None and answer.status == 200
        assert browsing.page.locator("h1").inner_text() == f"Run {BATCH}"
        assert browsing.page.locator("h2").all_inner_texts() == [
            "Row funnel",
            "Scores against the training reference",
            "Feature drift against the training data",
            "Stage timings",
        ]
        natural = browsing.page.eval_on_selector_all(
            "img", "images => images.map(i => i.complete ? i.naturalWidth : 0)"
        )
        assert len(natural) >= 5 and all(width > 0 for width in natural), natural
        folder = settings.var_dir / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        browsing.page.screenshot(path=str(folder / "run-report.png"), full_page=True)
        assert errors == []
    assert browsing.refused == [], "the report asked for something off the API's host"
