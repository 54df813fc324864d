"""Ingest benchmark: validated Parquet-to-Delta ingest against a plain Spark Parquet copy.

    .venv/bin/python bench/ingest.py [--rows 5000000] [--repeat 2]

Both run in the same Spark session on the same input (an id, 20 numeric and 3 categorical
features, a timestamp; about 1% bad rows). The ingest is the real job: contract validation,
duplicate detection, quarantine and incoming Delta commits and run records. Target: the
ingest at least 80% of the plain copy's rows/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.ingest import IngestRequest, ingest
from jobs.spark import spark_session
from local.embedded_pg import embedded_server
from precompute import database, migrations
from precompute.settings import Settings

NUMERIC = 20
CATEGORIES = ("alpha", "beta", "gamma", "delta")
FILES = 8

CONTRACT = """
name = "bench"
version = 1
[entity_id]
name = "entity_id"
type = "string"
nullable = false
[event_time]
name = "event_time"
type = "timestamp"
nullable = false
{features}
"""


def contract_text() -> str:
    features = [
        f'[[features]]\nname = "f{i}"\ntype = "double"\nnullable = false\nmin = -10\nmax = 10\n'
        for i in range(NUMERIC)
    ]
    allowed = ", ".join(f'"{c}"' for c in CATEGORIES)
    features += [
        f'[[features]]\nname = "c{i}"\ntype = "string"\nnullable = false\nallowed = [{allowed}]\n'
        for i in range(3)
    ]
    return CONTRACT.format(features="\n".join(features))


def generate(folder: Path, rows: int, seed: int = 7) -> int:
    """Write the input as Parquet files; returns how many rows were made bad."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bad_total = 0
    per_file = rows // FILES
    for index in range(FILES):
        n = per_file if index < FILES - 1 else rows - per_file * (FILES - 1)
        start = index * per_file
        ids = np.char.add("e", np.arange(start, start + n).astype(str))
        columns: dict[str, pa.Array] = {}
        values = rng.normal(size=(NUMERIC, n))
        # About 1% bad rows, spread over the kinds of damage a Parquet batch can carry.
        bad = rng.random(n) < 0.01
        kind = rng.integers(0, 4, n)
        values[0, bad & (kind == 0)] = 99.0  # out of range
        cats = [rng.choice(CATEGORIES, n).astype(object) for _ in range(3)]
        cats[0][bad & (kind == 1)] = "omega"  # unknown category
        nulls = bad & (kind == 2)  # null in a required column
        dup = np.flatnonzero(bad & (kind == 3))
        ids[dup] = ids[np.maximum(dup - 1, 0)]  # duplicate ids
        bad_total += int(bad.sum())
        columns["entity_id"] = pa.array(ids)
        for i in range(NUMERIC):
            mask = nulls if i == 1 else None
            columns[f"f{i}"] = pa.array(values[i], mask=mask)
        for i in range(3):
            columns[f"c{i}"] = pa.array(cats[i], pa.string())
        columns["event_time"] = pa.array(
            np.datetime64("2026-11-01") + np.arange(n).astype("timedelta64[s]"),
            pa.timestamp("us", tz="UTC"),
        )
        pq.write_table(pa.table(columns), folder / f"part-{index:02d}.parquet")
    return bad_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    base = Settings()
    work = base.var_dir / "bench" / "ingest"
    data = work / f"input-{args.rows}"
    if not data.exists():
        started = time.perf_counter()
        generate(data, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f}s: {data}")
    contracts = Path(tempfile.mkdtemp(prefix="bench-contracts-"))
    (contracts / "bench").mkdir()
    (contracts / "bench" / "v1.toml").write_text(contract_text())
    settings = base.model_copy(update={"contracts_dir": contracts, "lake_uri": str(work / "lake")})
    if settings.embedded_database:
        embedded_server(settings).start()
    migrations.migrate(database.admin_url(settings), settings)

    spark = spark_session(settings, "bench-ingest")
    copy_times, ingest_times = [], []
    for attempt in range(args.repeat + 1):  # the first round warms the JVM up, not counted
        out = work / "copy"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        spark.read.parquet(str(data)).write.parquet(str(out))
        copy = time.perf_counter() - started

        shutil.rmtree(work / "lake", ignore_errors=True)
        started = time.perf_counter()
        result = ingest(
            spark,
            settings,
            IngestRequest(str(data), f"bench-{attempt}", "bench", run_id=f"bench-{attempt}"),
        )
        took = time.perf_counter() - started
        counts = result.counts
        assert counts is not None and counts.read == args.rows, counts
        label = "warm-up" if attempt == 0 else f"round {attempt}"
        print(
            f"{label}: plain copy {copy:.1f}s ({args.rows / copy:,.0f} rows/s), "
            f"validated ingest {took:.1f}s ({args.rows / took:,.0f} rows/s): "
            f"{counts.accepted:,} accepted, {counts.quarantined:,} quarantined"
        )
        if attempt:
            copy_times.append(copy)
            ingest_times.append(took)
    copy_rate = args.rows / statistics.median(copy_times)
    ingest_rate = args.rows / statistics.median(ingest_times)
    ratio = ingest_rate / copy_rate
    print(f"plain Parquet copy:      {copy_rate:>12,.0f} rows/s (median of {args.repeat})")
    print(f"validated Delta ingest:  {ingest_rate:>12,.0f} rows/s (median of {args.repeat})")
    print(f"ingest / copy: {ratio:.2f} (target >= 0.80): {'MET' if ratio >= 0.8 else 'NOT MET'}")
    shutil.rmtree(contracts, ignore_errors=True)


if __name__ == "__main__":
    main()
