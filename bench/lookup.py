"""Lookup benchmark: the HTTP API under load (wrk) against a raw psycopg2 loop, 1M predictions.

    .venv/bin/python bench/lookup.py [--rows 1000000] [--seconds 15] [--connections 8 4 2]

A database `bench_lookup` on the embedded server (re-created) gets one model with a champion
version serving `--rows` predictions. The API (`precompute api`, uvicorn, `--workers`) runs
with the settings' pool; wrk (Debian's `wrk`; installed with apt when missing) drives it over
loopback with random ids: single lookups, and batchGet of 100 and of 1,000 ids. In the same run
a plain psycopg2 loop on one connection runs the same statement the API runs, as the floor.
Targets with the database on the same 2-core machine: at least 3,000 single lookups/s at p99
under 10 ms; batchGet of 1,000 ids at p99 under 30 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench_db import recreate_database

from lookup_api.core import keys
from precompute import database, serving_store
from precompute.settings import Settings

DATABASE = "bench_lookup"
SEED = """
INSERT INTO precompute.models (name, task) VALUES ('churn', 'classification');
INSERT INTO precompute.model_versions
    (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
SELECT model_id, 1, 'logistic_regression', 'file:///bench/v1.zip', repeat('0', 64),
       '{"dataset": "customers", "version": 1}' FROM precompute.models;
INSERT INTO precompute.model_aliases (model_id, alias, version_id)
SELECT model_id, 'champion', version_id FROM precompute.model_versions;
INSERT INTO precompute.runs (run_id, mode, state) VALUES ('bench', 'full', 'succeeded');
CREATE TABLE serving.predictions_v1 (LIKE precompute.predictions);
INSERT INTO serving.predictions_v1
SELECT 1, 'c' || g, random(), CASE WHEN random() > 0.5 THEN 'true' ELSE 'false' END, now(), 'bench'
  FROM generate_series(0, %(rows)s - 1) g;
ALTER TABLE serving.predictions_v1 ADD PRIMARY KEY (model_version_id, entity_id);
ALTER TABLE serving.predictions_v1 ADD CHECK (model_version_id = 1);
ALTER TABLE precompute.predictions ATTACH PARTITION serving.predictions_v1 FOR VALUES IN (1);
INSERT INTO precompute.serving_versions (model_version_id, row_count, last_run_id)
VALUES (1, %(rows)s, 'bench');
ANALYZE serving.predictions_v1;
"""

SINGLE_LUA = """
math.randomseed(os.time())
request = function()
  local path = "/v1/predictions/c" .. math.random(0, {rows} - 1) .. "?model=churn"
  return wrk.format("GET", path, {{["Authorization"] = "Bearer {key}"}})
end
"""
BATCH_LUA = """
math.randomseed(os.time())
local bodies = {{}}
for b = 1, 200 do
  local ids = {{}}
  for i = 1, {size} do ids[i] = '"c' .. math.random(0, {rows} - 1) .. '"' end
  bodies[b] = '{{"ids": [' .. table.concat(ids, ",") .. ']}}'
end
request = function()
  return wrk.format("POST", "/v1/predictions:batchGet?model=churn",
    {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json"}},
    bodies[math.random(1, 200)])
end
"""


def fresh_database(base: Settings, rows: int) -> str:
    url = recreate_database(base, DATABASE)
    with database.transaction(database.with_role(url, "writer", base), hint="") as cur:
        cur.execute(SEED, {"rows": rows})
    return url


def wrk(url: str, script: str, seconds: int, connections: int) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from wrk --latency."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "99"):
        value, unit = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[f"p{percentile}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["errors"] = float(errors.group(1)) if errors else 0.0
    return figures


def raw_loop(url: str, rows: int, size: int, seconds: float) -> dict[str, float]:
    """The API's statement on one psycopg2 connection, as fast as it goes."""
    connection = database.connect(url)
    connection.autocommit = True
    latencies = []
    rng = random.Random(1)
    with connection.cursor() as cursor:
        # Planned as the API's pool plans it: once, generically.
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE lookup(text, text, integer, text[]) AS {serving_store.LOOKUP}")
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            ids = [f"c{rng.randrange(rows)}" for _ in range(size)]
            started = time.perf_counter()
            cursor.execute("EXECUTE lookup(%s, %s, %s, %s)", ("churn", "champion", None, ids))
            cursor.fetchall()
            latencies.append(time.perf_counter() - started)
    connection.close()
    latencies.sort()
    return {
        "rps": len(latencies) / sum(latencies),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--connections",
        type=int,
        nargs=3,
        default=[8, 4, 2],
        help="wrk connections for single, batchGet 100 and batchGet 1000",
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)

    base = Settings()
    url = fresh_database(base, args.rows)
    writer = database.with_role(url, "writer", base)
    key, _ = keys.create(writer, "", "bench", (keys.READ,))
    env = os.environ | {"DATABASE_URL": url}
    port = 18_765
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "api",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    target = f"http://127.0.0.1:{port}"
    try:
        time.sleep(4)
        results = []
        scenarios = (
            ("single", SINGLE_LUA.format(rows=args.rows, key=key), 1),
            ("batchGet 100", BATCH_LUA.format(rows=args.rows, key=key, size=100), 100),
            ("batchGet 1000", BATCH_LUA.format(rows=args.rows, key=key, size=1000), 1000),
        )
        for (name, script, size), connections in zip(scenarios, args.connections, strict=True):
            wrk(target, script, 3, connections)  # warm-up: pools, caches, plans
            api = wrk(target, script, args.seconds, connections)
            raw = raw_loop(url, args.rows, size, args.seconds)
            results.append((name, api, raw))
            print(
                f"{name:<14} c={connections:<3} API {api['rps']:>8,.0f} req/s "
                f"p50 {api['p50']:6.2f} ms p99 {api['p99']:6.2f} ms ({api['errors']:.0f} errors)"
                " | raw psycopg2 "
                f"{raw['rps']:>8,.0f} q/s p50 {raw['p50']:6.2f} ms p99 {raw['p99']:6.2f} ms",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()
    single, batch = results[0][1], results[2][1]
    print(
        f"single: {single['rps']:,.0f} req/s (target 3,000), p99 {single['p99']:.2f} ms "
        f"(target < 10): {'MET' if single['rps'] >= 3000 and single['p99'] < 10 else 'NOT MET'}"
    )
    print(
        f"batchGet 1000: p99 {batch['p99']:.2f} ms (target < 30): "
        f"{'MET' if batch['p99'] < 30 else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
