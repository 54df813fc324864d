"""The lookup log as an analyst meets it: requests sent by a real client to the real API
(`precompute api`), shipped by the real shipper into Delta on the session's Spark and into
PostgreSQL, counted there and compared with what the client sent."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from api_support import auth, seeded_database, served, server_pid
from conftest import fetch_all, run_cli, serve_api
from pydantic import SecretStr

from jobs import lookup_log as shipper
from precompute import database, lookup_log
from precompute.database import Database
from precompute.settings import Settings

LOOKUP = "/v1/predictions/{entity_id}"
BATCH = "/v1/predictions:batchGet"
# Quick flushes and rotations: the test waits for them.
SPOOL_SETTINGS = {
    "PRECOMPUTE_LOOKUP_LOG_FLUSH_SECONDS": "0.1",
    "PRECOMPUTE_LOOKUP_LOG_ROTATE_SECONDS": "0.5",
}


@dataclass
class Client:
    """Sends lookups and keeps its own count of what each should log."""

    base: str
    key: str
    sent: Counter[tuple[Any, ...]]

    def lookup(self, entity: str, key: str | None = "", **params: Any) -> None:
        response = httpx.get(
            f"{self.base}/v1/predictions/{entity}",
            params=params,
            headers=auth(self.key if key == "" else key),
            timeout=10,
        )
        body = response.json()
        if response.status_code == 200:
            self.sent[(LOOKUP, "churn", body["version"], 1, 0)] += 1
        elif body["error"]["code"] == "not_scored":
            self.sent[(LOOKUP, "churn", params.get("version", 1), 0, 1)] += 1
        else:  # refused before a model version was chosen: no model, version, hits or misses
            self.sent[(LOOKUP, None, None, None, None)] += 1

    def batch(self, ids: list[str]) -> None:
        response = httpx.post(
            f"{self.base}/v1/predictions:batchGet",
            params={"model": "churn"},
            json={"ids": ids},
            headers=auth(self.key),
            timeout=10,
        )
        body = response.json()
        self.sent[(BATCH, "churn", 1, len(body["predictions"]), len(body["missing"]))] += 1

    def traffic(self, requests: int = 1) -> None:
        """A mix of everything the log tells apart, `requests` times over."""
        for _ in range(requests):
            self.lookup("c0", model="churn")
            self.lookup("c1", model="churn", version=2)
            self.lookup("nobody", model="churn")
            self.lookup("c0", model="nope")
            self.lookup("c0", key=None, model="churn")  # no key: 401
            self.batch(["c0", "c1", "x1", "x2", "x3"])


@pytest.fixture
def database_url(admin_url: str, settings: Settings) -> Iterator[str]:
    # One per test: a ship recounts whole hours from its own lake into this database.
    with seeded_database(admin_url, settings) as url:
        yield url


def ship_settings(settings: Settings, url: str, spool: Path, lake: Path) -> Settings:
    return settings.model_copy(
        update={"database_url": SecretStr(url), "lake_uri": str(lake), "lookup_log_dir": spool}
    )


def totals(rows: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """(route, model, version, hits, misses per request) -> requests, from per-request rows."""
    return Counter({tuple(r[:5]): int(r[5]) for r in rows})


def wait_closed(spool: Path) -> None:
    """Until the running API has closed its file (rotation), so the shipper takes it."""
    deadline = time.time() + 10
    while list(spool.glob("*" + lookup_log.OPEN)) or not list(spool.glob("*" + lookup_log.CLOSED)):
        assert time.time() < deadline, f"the API did not close its spool file in {spool}"
        time.sleep(0.1)


def test_the_lookup_log_counts_the_requests_sent_across_a_restart_and_a_crash(
    database_url: str, settings: Settings, spark: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    variables = SPOOL_SETTINGS | {"PRECOMPUTE_LOOKUP_LOG_DIR": str(spool)}
    sent: Counter[tuple[Any, ...]] = Counter()
    with served(database_url, tmp_path / "first.log", ("reader", "submitter"), **variables) as api:
        Client(api.base, api.reader_key, sent).traffic(3)
        env, key = api.env, api.reader_key
    # Stopped (SIGTERM): everything it queued is in closed files now.
    assert not list(spool.glob("*" + lookup_log.OPEN))
    # Files closed every 2 s: the first of this run is closed, the second still open at the kill.
    restarted = env | {"PRECOMPUTE_LOOKUP_LOG_ROTATE_SECONDS": "2"}
    with serve_api(restarted, tmp_path / "second.log") as base:
        Client(base, key, sent).traffic(2)
        wait_closed(spool)
        Client(base, key, sent).traffic(1)
        time.sleep(0.5)  # five flushes: a crash loses only what came since the last
        os.kill(server_pid(int(base.rsplit(":", 1)[1])), signal.SIGKILL)
    assert list(spool.glob("*" + lookup_log.OPEN))  # the killed writer's, left open

    job = ship_settings(settings, database_url, spool, tmp_path / "lake")
    files = lookup_log.closed_files(spool)  # the killed writer's file closed for it
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in files:
        shutil.copy(path, kept / path.name)
    done = shipper.ship(spark, job, Database.from_settings(job))
    total = sum(sent.values())
    assert (done.files, done.records, done.added, done.unreadable) == (len(files), total, total, 0)
    assert not list(spool.iterdir())  # shipped files are deleted

    log = spark.read.format("delta").load(f"{job.lake_uri}/{shipper.TABLE}")
    assert log.select("request_id").distinct().count() == log.count() == total
    rows = log.groupBy("route", "model", "version", "hits", "misses").count().collect()
    assert totals([tuple(r) for r in rows]) == sent
    # Readable without Spark too, as the README shows analysts.
    assert pl.read_delta(f"{job.lake_uri}/{shipper.TABLE}").height == total

    # A shipper that stopped after its commit, before deleting: the same files shipped again.
    for path in kept.iterdir():
        shutil.copy(path, spool / path.name)
    again = shipper.ship(spark, job, Database.from_settings(job))
    assert (again.records, again.added) == (total, 0)
    assert spark.read.format("delta").load(f"{job.lake_uri}/{shipper.TABLE}").count() == total
    assert shipper.ship(spark, job, Database.from_settings(job)).files == 0

    reader = database.with_role(database_url, "reader", settings)
    by_group = fetch_all(
        reader,
        "SELECT route, model, version, sum(requests), sum(hits), sum(misses), "
        "sum(client_errors) FROM analytics.lookup_traffic GROUP BY 1, 2, 3",
    )
    expected: dict[tuple[Any, ...], list[int]] = {}
    for (route, model, version, hits, misses), n in sent.items():
        counts = expected.setdefault((route, model, version), [0, 0, 0, 0])
        counts[0] += n
        counts[1] += (hits or 0) * n
        counts[2] += (misses or 0) * n
        counts[3] += n if model is None or (route == LOOKUP and misses) else 0
    assert {tuple(r[:3]): [int(v) for v in r[3:]] for r in by_group} == expected


def test_hourly_latency_figures_match_numpy_on_the_same_records(
    database_url: str, settings: Settings, spark: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with served(database_url, tmp_path / "api.log", PRECOMPUTE_LOOKUP_LOG_DIR=str(spool)) as api:
        client = Client(api.base, api.reader_key, Counter())
        for i in range(40):
            client.lookup(f"c{i % 3}", model="churn")
    records = [
        json.loads(line)
        for path in lookup_log.closed_files(spool)
        for line in path.read_text().splitlines()
    ]
    job = ship_settings(settings, database_url, spool, tmp_path / "lake")
    shipper.ship(spark, job, Database.from_settings(job))
    latencies: dict[int, list[float]] = {}
    for r in records:
        latencies.setdefault(int(r["ts"] // 3600 * 3600), []).append(r["latency_ms"])
    figures = fetch_all(
        database.with_role(database_url, "reader", settings),
        "SELECT extract(epoch FROM hour)::bigint, p50_ms, p95_ms, max_ms "
        "FROM analytics.lookup_traffic WHERE route = %s AND version = 1 AND hour = ANY(%s)",
        (LOOKUP, [datetime.datetime.fromtimestamp(h, datetime.UTC) for h in latencies]),
    )
    # Spark's percentile_approx is exact at this size, and picks a value of the data: NumPy's
    # inverted CDF.
    assert len(figures) == len(latencies)
    for hour, p50, p95, top in figures:
        values = np.array(latencies[hour])
        assert p50 == np.percentile(values, 50, method="inverted_cdf")
        assert p95 == np.percentile(values, 95, method="inverted_cdf")
        assert top == values.max()


def test_a_dead_writers_file_is_closed_for_it_and_a_live_ones_is_left(tmp_path: Path) -> None:
    from lookup_api.core.lookup_spool import Spool  # the API's writer, in this process

    live = Spool(tmp_path, flush_seconds=0.05, rotate_seconds=3600)
    live.start()
    live.put('{"request_id": "live-1"}')
    script = (
        "import os, sys, time; from pathlib import Path; "
        "from lookup_api.core.lookup_spool import Spool; "
        's = Spool(Path(sys.argv[1]), 0.05, 3600); s.start(); s.put(\'{"request_id": "dead-1"}\');'
        "time.sleep(0.5); os._exit(9)"  # killed: no close
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, timeout=30)
    time.sleep(0.3)
    assert len(list(tmp_path.glob("*" + lookup_log.OPEN))) == 2
    closed = lookup_log.closed_files(tmp_path)
    assert [p.read_text() for p in closed] == ['{"request_id": "dead-1"}\n']
    live.close()
    assert sorted(p.read_text() for p in lookup_log.closed_files(tmp_path)) == [
        '{"request_id": "dead-1"}\n',
        '{"request_id": "live-1"}\n',
    ]


def test_with_the_lookup_log_off_the_api_spools_nothing(database_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with served(
        database_url,
        tmp_path / "api.log",
        PRECOMPUTE_LOOKUP_LOG="false",
        PRECOMPUTE_LOOKUP_LOG_DIR=str(spool),
    ) as api:
        Client(api.base, api.reader_key, Counter()).traffic(1)
    assert not spool.exists() or not list(spool.iterdir())
    lines = [json.loads(x) for x in api.log.read_text().splitlines() if x.startswith("{")]
    assert len([x for x in lines if x["route"] in (LOOKUP, BATCH)]) == 6  # stdout still has them


def test_the_ship_command_says_when_there_is_nothing_to_ship(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = os.environ | {"PRECOMPUTE_LOOKUP_LOG_DIR": str(spool)}
    result = run_cli("lookup-log", "ship", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lookup log: nothing to ship in {spool}"
