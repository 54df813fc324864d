"""Lookup benchmark: the HTTP API under load (wrk) against a raw psycopg2 loop, 1M predictions.

    .venv/bin/python bench/lookup.py [--rows 1000000] [--seconds 15] [--connections 8 4 2]
                                     [--lookup-log off on] [--rounds 2]

A database `bench_lookup` on the embedded server (re-created) gets one model with a champion
version serving `--rows` predictions. The API (`precompute api`, uvicorn, `--workers`) runs
with the settings' pool; wrk (Debian's `wrk`; installed with apt when missing) drives it over
loopback with random ids: single lookups, and batchGet of 100 and of 1,000 ids. In the same run
a plain psycopg2 loop on one connection runs the same statement the API runs, as the floor.
Targets with the database on the same 2-core machine: at least 3,000 single lookups/s at p99
under 10 ms; batchGet of 1,000 ids at p99 under 30 ms.

The lookup log: the API runs once per `--lookup-log` setting per round (rounds alternate the
settings, so a neighbour's load on the shared machine falls on both), spooling into a temporary
folder; the ratio of the medians (log on / log off) is printed per scenario, target at least
0.95. Then, with the log on, wrk sends single lookups and the API is killed (SIGKILL, all its
processes) the moment wrk ends: the records lost are the requests wrk counted minus the lines
in the spool, what a crash costs.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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
        done = subprocess.run(
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
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed against {url}: {(done.stderr or done.stdout).strip()}")
    out = done.stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    figures["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
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


def start_api(
    url: str, workers: int, port: int, lookup_log: str, spool: Path
) -> subprocess.Popen[bytes]:
    """`precompute api` with the lookup log on or off, in its own process group."""
    env = os.environ | {
        "DATABASE_URL": url,
        "PRECOMPUTE_LOOKUP_LOG": "true" if lookup_log == "on" else "false",
        "PRECOMPUTE_LOOKUP_LOG_DIR": str(spool),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # killpg reaches its workers too
    )
    # Ready when it answers, not after a fixed sleep: on a loaded machine start-up takes longer.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                time.sleep(1)  # the second worker starts beside the first
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the API on port {port} did not answer /healthz within 60 s")


def middleware_cost(requests: int = 100_000, rounds: int = 3) -> None:
    """CPU per request of the logging middleware with the spool off and on, in this process:
    Observe around a handler that answers at once, its log line to /dev/null as the server's
    stdout is here, the spool's thread writing to a temporary folder. Process CPU time, so the
    thread's writing counts too, and a neighbour's load on the machine does not."""
    import asyncio
    import logging

    from lookup_api.core import observability
    from lookup_api.core.lookup_spool import Spool

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["log"] |= {"model": "churn", "version": 1, "hits": 1, "misses": 0}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    class Route:
        path = "/v1/predictions/{entity_id}"

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    async def drive(app: observability.Observe) -> float:
        started = time.process_time()
        for _ in range(requests):
            await app({"type": "http", "method": "GET", "route": Route()}, receive, send)
        # Asleep (no CPU) until the thread has written what this round queued: it counts here.
        await asyncio.sleep(1.2)
        return time.process_time() - started

    with open(os.devnull, "w") as devnull:
        observability.LOG.addHandler(logging.StreamHandler(devnull))
        observability.LOG.setLevel(logging.INFO)
        observability.LOG.propagate = False
        folder = Path(tempfile.mkdtemp(prefix="bench-spool-"))
        spool = Spool(folder, 1.0, 60.0)
        spool.start()
        routes = frozenset({Route.path})
        apps = {
            "off": observability.Observe(answer, observability.Metrics()),
            "on": observability.Observe(answer, observability.Metrics(), spool, routes),
        }
        seconds: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                seconds[mode].append(asyncio.run(drive(apps[mode])))
        spool.close()
        shutil.rmtree(folder)
    off, on = (min(seconds[m]) / requests * 1e6 for m in ("off", "on"))
    print(
        f"middleware CPU per request (best of {rounds} x {requests:,}): log off {off:.1f} us, "
        f"log on {on:.1f} us: +{on - off:.1f} us per lookup",
        flush=True,
    )


def spooled_lines(spool: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in spool.iterdir() if p.is_file())


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
    parser.add_argument("--lookup-log", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each lookup-log setting")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)

    if "on" in args.lookup_log:
        middleware_cost()
    base = Settings()
    url = fresh_database(base, args.rows)
    writer = database.with_role(url, "writer", base)
    key, _ = keys.create(writer, "", "bench", (keys.READ,))
    port = 18_765
    target = f"http://127.0.0.1:{port}"
    scenarios = (
        ("single", SINGLE_LUA.format(rows=args.rows, key=key), 1),
        ("batchGet 100", BATCH_LUA.format(rows=args.rows, key=key, size=100), 100),
        ("batchGet 1000", BATCH_LUA.format(rows=args.rows, key=key, size=1000), 1000),
    )
    spool = Path(tempfile.mkdtemp(prefix="bench-lookup-log-"))
    measured: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for round_ in range(args.rounds):
            # off, on, then on, off: a trend in the machine's load falls on both alike.
            order = args.lookup_log if round_ % 2 == 0 else args.lookup_log[::-1]
            for mode in order:
                server = start_api(url, args.workers, port, mode, spool)
                try:
                    for (name, script, size), connections in zip(
                        scenarios, args.connections, strict=True
                    ):
                        wrk(target, script, 3, connections)  # warm-up: pools, caches, plans
                        api = wrk(target, script, args.seconds, connections)
                        measured.setdefault((name, mode), []).append(api)
                        line = (
                            f"{name:<14} log {mode:<3} round {round_ + 1} c={connections:<3} "
                            f"API {api['rps']:>8,.0f} req/s p50 {api['p50']:6.2f} ms "
                            f"p99 {api['p99']:6.2f} ms ({api['errors']:.0f} errors)"
                        )
                        if round_ == 0 and mode == order[0]:
                            raw = raw_loop(url, args.rows, size, args.seconds)
                            line += (
                                f" | raw psycopg2 {raw['rps']:>8,.0f} q/s p50 "
                                f"{raw['p50']:6.2f} ms p99 {raw['p99']:6.2f} ms"
                            )
                        print(line, flush=True)
                finally:
                    server.terminate()
                    server.wait()
                for path in spool.iterdir():
                    path.unlink()
        if "on" in args.lookup_log:
            crash_loss(url, args, target, scenarios[0][1], spool)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    summary(measured, args.lookup_log)


def crash_loss(url: str, args: argparse.Namespace, target: str, script: str, spool: Path) -> None:
    """Single lookups, then SIGKILL the moment wrk ends: the records a crash loses."""
    server = start_api(url, args.workers, int(target.rsplit(":", 1)[1]), "on", spool)
    try:
        sent = wrk(target, script, args.seconds, args.connections[0])
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    kept = spooled_lines(spool)
    lost = int(sent["requests"]) - kept
    print(
        f"crash: wrk completed {sent['requests']:,.0f} lookups at {sent['rps']:,.0f} req/s; "
        f"SIGKILL at its end; the spool holds {kept:,}: {lost:,} lost "
        f"({lost / sent['rps']:.2f} s of traffic; PRECOMPUTE_LOOKUP_LOG_FLUSH_SECONDS bounds it)",
        flush=True,
    )


def summary(measured: dict[tuple[str, str], list[dict[str, float]]], modes: list[str]) -> None:
    def median(name: str, mode: str, figure: str) -> float:
        return statistics.median(m[figure] for m in measured[(name, mode)])

    for name in ("single", "batchGet 100", "batchGet 1000"):
        cells = [
            f"log {mode}: {median(name, mode, 'rps'):,.0f} req/s "
            f"p99 {median(name, mode, 'p99'):.2f} ms"
            for mode in modes
        ]
        line = f"{name:<14} median " + " | ".join(cells)
        if len(modes) == 2:
            ratio = median(name, "on", "rps") / median(name, "off", "rps")
            line += (
                f" | on/off {ratio:.3f} (target >= 0.95): {'MET' if ratio >= 0.95 else 'NOT MET'}"
            )
        print(line)
    mode = modes[-1]
    single, batch = median("single", mode, "rps"), median("batchGet 1000", mode, "p99")
    single_p99 = median("single", mode, "p99")
    print(
        f"single (log {mode}): {single:,.0f} req/s (target 3,000), p99 {single_p99:.2f} ms "
        f"(target < 10): {'MET' if single >= 3000 and single_p99 < 10 else 'NOT MET'}"
    )
    print(
        f"batchGet 1000 (log {mode}): p99 {batch:.2f} ms (target < 30): "
        f"{'MET' if batch < 30 else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
