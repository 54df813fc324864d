"""Freshness: seconds from a batch landing to its predictions being served, through the platform.

    .venv/bin/python bench/freshness.py --rows 1000 1000000

Against the running platform the demo starts (PostgreSQL, the warm Spark driver, Airflow
standalone with its landing watcher, the lookup API; started here when they are not running, and
left running): for each size, a batch of new customers (1% with an age the contract refuses) is
written under a hidden name and renamed into the landing folder, as the landing contract asks of
producers. The clock starts at the rename and stops when the lookup API serves the batch's last
accepted id (publish is one transaction: when one of the run's ids is served, all are). Then every
accepted id is checked: all of them through `batchGet` up to 10,000 rows, a random sample of
10,000 through `batchGet` and the count of all in SQL above that.

Reported per size: landing to served, and its parts (landing to the DAG run's start, the plan
task, the stages task up to publish, each stage's share from the run records); and the floor: the
same ingest, score and publish in this process on a batch like it, twice in one Spark session
(the first pass of the first size pays the session's start and warm-up, the second does not).
Targets on the 2-core machine: 1,000 rows served within 20 s of landing, 1,000,000 within 60 s.
"""

from __future__ import annotations

import argparse
import datetime
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.sample_data import customers, with_bad_rows
from local.demo import DATASET, MODEL, Platform, start_platform
from local.http import call
from local.landing import land_batch
from precompute import names
from precompute.settings import Settings

TARGETS = {1_000: 20.0, 1_000_000: 60.0}
FILES = 4
BAD_SHARE = 0.01
CHECK_ALL_UP_TO = 10_000
SAMPLE = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--no-floor", action="store_true", help="skip the in-process floor")
    args = parser.parse_args()
    settings = Settings()
    started = time.monotonic()
    platform = start_platform(
        settings, lambda text: print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)
    )
    results = []
    for rows in args.rows:
        results.append(measure(settings, platform, rows))
    floors = {} if args.no_floor else floor(settings, platform, args.rows)
    print("\nlanding to served, through Airflow, the warm driver and the lookup API:")
    print(
        f"{'rows':>10} {'served s':>9} {'target':>7} {'run start':>9} {'plan':>6} "
        f"{'stages':>7} {'ingest':>7} {'score':>6} {'publish':>7} {'floor 1st':>10} "
        f"{'floor 2nd':>10}"
    )
    failed = False
    for r in results:
        target = TARGETS.get(r["rows"])
        ok = target is None or r["served"] <= target
        failed |= not ok
        cold, warm = floors.get(r["rows"], (float("nan"), float("nan")))
        print(
            f"{r['rows']:>10,} {r['served']:>9.1f} {target or float('nan'):>7.0f} "
            f"{r['run_start']:>9.1f} {r['plan']:>6.1f} {r['stages']:>7.1f} "
            f"{r['stage_ingest']:>7.1f} {r['stage_score']:>6.1f} {r['stage_publish']:>7.1f} "
            f"{cold:>10.1f} {warm:>10.1f}  {'met' if ok else 'MISSED'}"
        )
        shares = {k: r[f"stage_{k}"] / r["served"] for k in ("ingest", "score", "publish")}
        rest = 1 - sum(shares.values())
        print(
            f"{'':>10} shares of served: "
            + ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
            + f", Airflow and waiting {rest:.0%}"
        )
    return 1 if failed else 0


def measure(settings: Settings, platform: Platform, rows: int) -> dict[str, Any]:
    """Land a batch of `rows` new customers; time it to served and check every accepted id."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    batch = f"fresh-{rows}-{stamp}"
    # Microseconds since the epoch: batches minutes apart never share an id (a million ids is
    # one second of them), so served means served by this batch. Checked below.
    first_id = time.time_ns() // 1000
    tables = _batch(rows, first_id)
    accepted = [
        f"c{first_id + i}"
        for i in range(rows)
        if i % (rows // FILES) >= int(rows // FILES * BAD_SHARE)
    ]
    probe = accepted[-1]
    folder = Path(settings.landing_root) / batch
    known = {r["dag_run_id"] for r in platform.airflow.runs("score_batch")}
    if len(_missing(platform, [accepted[0], probe])) != 2:
        raise SystemExit(f"{batch}: its ids are served before it landed; pick other ids")
    landed = land_batch(folder, tables)
    print(f"{batch}: landed {rows:,} rows; waiting for {probe} to be served")
    while not _served(platform, [probe]):
        if time.time() - landed > 900:
            raise SystemExit(f"{batch}: not served within 900 s; see the score_batch DAG runs")
        time.sleep(0.2)
    served = time.time() - landed
    run = platform.airflow.new_run("score_batch", known, timeout=60)
    platform.airflow.wait("score_batch", run["dag_run_id"], lambda t: None)
    run_id = names.run_id("incremental", MODEL, platform.champion, batch)
    _check_all(platform, run_id, accepted)
    tasks = _task_times(platform, run["dag_run_id"])
    stages = _stage_seconds(platform, run_id)
    queued = _epoch(run["queued_at"]) if run.get("queued_at") else landed
    print(
        f"{batch}: served {served:.1f} s after landing; all {len(accepted):,} accepted ids "
        "are served"
    )
    return {
        "rows": rows,
        "served": served,
        "run_start": queued - landed,
        "plan": tasks["plan"][1] - tasks["plan"][0],
        "stages": tasks["stages"][1] - tasks["stages"][0],
        **{f"stage_{k}": v for k, v in stages.items()},
    }


def _batch(rows: int, first_id: int) -> list[Any]:
    part = rows // FILES
    return [
        with_bad_rows(
            customers(part, seed=i, first_id=first_id + i * part, label=False),
            int(part * BAD_SHARE),
        )
        for i in range(FILES)
    ]


def _served(platform: Platform, ids: list[str]) -> bool:
    return not _missing(platform, ids)


def _missing(platform: Platform, ids: list[str]) -> list[str]:
    answer = call(
        "POST",
        f"{platform.api}/v1/predictions:batchGet?model={MODEL}",
        {"ids": ids},
        token=platform.key,
        timeout=30,
    )
    if not answer.ok:
        raise SystemExit(f"batchGet answered {answer.status}: {answer.text()[:300]}")
    missing: list[str] = answer.json()["missing"]
    return missing


def _check_all(platform: Platform, run_id: str, accepted: list[str]) -> None:
    ids = accepted if len(accepted) <= CHECK_ALL_UP_TO else random.sample(accepted, SAMPLE)
    for start in range(0, len(ids), 1000):
        if not _served(platform, ids[start : start + 1000]):
            raise SystemExit(f"{run_id}: some accepted ids are not served")
    [(count,)] = platform.db.fetch(
        "reader",
        "SELECT count(*) FROM analytics.current_predictions WHERE run_id = %s",
        (run_id,),
    )
    if count != len(accepted):
        raise SystemExit(f"{run_id}: {count} predictions served, {len(accepted)} accepted")


def _task_times(platform: Platform, dag_run_id: str) -> dict[str, tuple[float, float]]:
    listing = platform.airflow._call(
        "GET", f"/api/v2/dags/score_batch/dagRuns/{dag_run_id}/taskInstances"
    )
    return {
        t["task_id"]: (_epoch(t["start_date"]), _epoch(t["end_date"]))
        for t in listing["task_instances"]
        if t.get("start_date") and t.get("end_date")
    }


def _stage_seconds(platform: Platform, run_id: str) -> dict[str, float]:
    rows = platform.db.fetch(
        "reader",
        "SELECT stage, extract(epoch FROM finished_at - started_at) FROM analytics.run_stages "
        "WHERE run_id = %s",
        (run_id,),
    )
    found = {str(stage): float(seconds) for stage, seconds in rows}
    return {k: found.get(k, 0.0) for k in ("ingest", "score", "publish")}


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def floor(
    settings: Settings, platform: Platform, sizes: list[int]
) -> dict[int, tuple[float, float]]:
    """The same stages in this process, twice per size in one session: (first, second)."""
    # Spark starts only when the floor is measured, after the platform's own runs.
    from jobs.ingest import IngestRequest, ingest
    from jobs.publish import publish
    from jobs.score import ScoreRequest, score
    from jobs.spark import spark_session

    spark = spark_session(settings, "bench-freshness-floor")
    found = {}
    for rows in sizes:
        times = []
        for attempt in ("cold", "warm"):
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
            batch = f"floor-{rows}-{attempt}-{stamp}"
            folder = Path(settings.var_dir) / "bench" / "freshness" / batch
            shutil.rmtree(folder, ignore_errors=True)
            land_batch(folder, _batch(rows, time.time_ns() // 1000))
            run_id = f"bench-floor-{batch}"
            began = time.monotonic()
            ingest(spark, settings, IngestRequest(str(folder), batch, DATASET, run_id=run_id))
            request = ScoreRequest(
                MODEL, "incremental", batch, version=platform.champion, run_id=run_id
            )
            score(spark, settings, platform.db, request)
            publish(spark, settings, platform.db, run_id)
            times.append(time.monotonic() - began)
            shutil.rmtree(folder, ignore_errors=True)
        found[rows] = (times[0], times[1])
        print(f"floor {rows:,} rows: {times[0]:.1f} s, then {times[1]:.1f} s again")
    return found


if __name__ == "__main__":
    sys.exit(main())
