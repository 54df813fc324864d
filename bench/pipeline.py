"""End-to-end pipeline benchmark: ingest, score and publish against two hand-written baselines.

    .venv/bin/python bench/pipeline.py --rows 1000000 10000000

For each size and each model (a logistic regression and a random forest, 100 trees of depth 8,
fitted once on 50,000 labelled customers and registered as champion), on the same Parquet input
(customers, 8 files, about 1% of rows with an age outside the contract):

- the pipeline: the real ingest, score and publish jobs in one Spark session (validation,
  quarantine, Delta history, run records, metrics, atomic publish), timed per stage;
- expert: one process with pandas, scikit-learn and psycopg2 COPY: read the Parquet files, score
  with the same fitted scikit-learn pipeline, COPY the rows into a table with the serving key;
- to_sql: the same, written the way most people do: `DataFrame.to_sql(..., if_exists="append")`;
- raw COPY: the final rows already rendered as CSV in memory, COPY'd on one connection into an
  empty table with the serving key: the floor of the publish stage. Measured twice: with the
  three columns that vary per row (what publish copies; the rest are column defaults) and with
  all six columns of a served row.

Everything runs on a dedicated database `bench_pipeline` on the embedded server (dropped and
created at the start) and a lake under var/bench/pipeline. Targets on the 2-core machine: the
publish stage at least 60% of the raw COPY rate; the pipeline at least 5x the to_sql script and
at least 0.7x the expert script at 10M rows.
"""

from __future__ import annotations

import argparse
import datetime
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_db import recreate_database

from jobs import modeling
from jobs.bundle.export import export_bundle
from jobs.ingest import IngestRequest, ingest
from jobs.model_kinds import feature_layout
from jobs.monitoring import reference_distribution
from jobs.publish import publish
from jobs.registration import register as register_version
from jobs.sample_data import customers
from jobs.score import ScoreRequest, score
from jobs.spark import spark_session
from precompute import database
from precompute.contracts import load_contract
from precompute.database import Database
from precompute.settings import Settings

FILES = 8
BAD_SHARE = 0.01
DATABASE = "bench_pipeline"
MODELS = ("logistic_regression", "random_forest")
TABLE_DDL = """
CREATE TABLE bench.{name} (
    model_version_id bigint NOT NULL DEFAULT 1,
    entity_id text NOT NULL,
    score double precision NOT NULL,
    label text,
    scored_at timestamptz NOT NULL DEFAULT now(),
    run_id text NOT NULL DEFAULT 'bench',
    PRIMARY KEY (model_version_id, entity_id)
)
"""


def generate(folder: Path, rows: int) -> None:
    """Customers in FILES Parquet files; BAD_SHARE of them with an age the contract refuses."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // FILES)
    rng = np.random.default_rng(99)
    for index in range(FILES):
        first = index * per_file
        n = min(per_file, rows - first)
        table = customers(n, seed=1000 + index, first_id=first, label=False)
        age = table.column("age").to_numpy().copy()
        age[rng.random(n) < BAD_SHARE] = 150.0
        table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(age))
        pq.write_table(table, folder / f"part-{index:02d}.parquet")


def fresh_database(base: Settings) -> str:
    url = recreate_database(base, DATABASE)
    with database.transaction(url, hint="") as cur:
        cur.execute("CREATE SCHEMA bench")
    return url


def register(settings: Settings, db: Database, kind: str, folder: Path) -> tuple[Any, Any]:
    """Fit the training pipeline on labelled customers, register it as champion."""
    contract = load_contract(settings.contracts_dir, "customers", 1)
    layout = feature_layout(contract)
    training = customers(50_000, seed=1)
    pipeline = modeling.build_pipeline(contract, kind, "classification", {})  # type: ignore[arg-type]
    frame = modeling.features_frame(training, layout)
    target = np.asarray(training.column("churned").to_pylist())
    pipeline.fit(frame, target)
    scores = pipeline.predict_proba(frame)[:, 1]
    metadata = {
        "model_kind": kind,
        "task": "classification",
        "classes": ["false", "true"],
        "input_contract": contract.input_schema(),
    }
    path = export_bundle(pipeline, folder / f"{kind}.zip", kind, metadata)
    version = register_version(
        db,
        settings.models_root,
        path,
        f"bench-{kind.replace('_', '-')}",
        reference_scores=reference_distribution(scores),
        aliases=("champion",),
    )
    return pipeline, version


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run_pipeline(
    spark: Any, settings: Settings, db: Database, data: Path, model: str, batch: str
) -> dict[str, float]:
    seconds = {}
    seconds["ingest"], _ = timed(
        lambda: ingest(
            spark,
            settings,
            IngestRequest(str(data), batch, "customers", run_id=batch, max_rejected_share=0.05),
        )
    )
    seconds["score"], scored = timed(
        lambda: score(spark, settings, db, ScoreRequest(model, batch_id=batch, run_id=batch))
    )
    seconds["publish"], published = timed(lambda: publish(spark, settings, db, batch))
    assert published.rows_published == scored.rows_scored, (published, scored)
    seconds["total"] = sum(seconds.values())
    seconds["rows"] = published.rows_published
    seconds["publish_detail"] = published.seconds
    return seconds


def script_rows(data: Path, pipeline: Any, layout: Any) -> tuple[dict[str, float], Any]:
    """The baselines' shared first half: read with pandas, score with scikit-learn."""
    import pandas as pd

    seconds = {}
    started = time.perf_counter()
    table = pq.read_table(data)
    frame = modeling.features_frame(table, layout)
    ids = table.column("customer_id").to_pandas()
    seconds["read"] = time.perf_counter() - started
    started = time.perf_counter()
    probability = pipeline.predict_proba(frame)[:, 1]
    out = pd.DataFrame(
        {
            "model_version_id": 1,
            "entity_id": ids,
            "score": probability,
            "label": np.where(probability > 0.5, "true", "false"),
            "scored_at": datetime.datetime.now(datetime.UTC),
            "run_id": "expert",
        }
    )
    seconds["score"] = time.perf_counter() - started
    return seconds, out


def expert(url: str, data: Path, pipeline: Any, layout: Any) -> dict[str, float]:
    seconds, out = script_rows(data, pipeline, layout)
    started = time.perf_counter()
    with database.transaction(url, hint="") as cur:
        cur.execute("DROP TABLE IF EXISTS bench.expert")
        cur.execute(TABLE_DDL.format(name="expert"))
        buffer = io.StringIO()
        out.to_csv(buffer, index=False, header=False)
        buffer.seek(0)
        cur.copy_expert(
            "COPY bench.expert (model_version_id, entity_id, score, label, scored_at, run_id) "
            "FROM STDIN WITH (FORMAT csv)",
            buffer,
        )
    seconds["copy"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds


def to_sql(url: str, data: Path, pipeline: Any, layout: Any) -> dict[str, float]:
    from sqlalchemy import create_engine

    seconds, out = script_rows(data, pipeline, layout)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with database.transaction(url, hint="") as cur:
        cur.execute("DROP TABLE IF EXISTS bench.to_sql")
        cur.execute(TABLE_DDL.format(name="to_sql"))
    started = time.perf_counter()
    out.to_sql("to_sql", engine, schema="bench", if_exists="append", index=False)
    seconds["insert"] = time.perf_counter() - started
    engine.dispose()
    seconds["total"] = sum(seconds.values())
    return seconds


def raw_copy(url: str, rows: int, all_columns: bool) -> float:
    """Seconds to COPY `rows` final rows, already CSV in memory, into a table with the key."""
    ids = pa.array(np.char.add("c", np.arange(rows).astype(str)))
    scores = np.random.default_rng(0).random(rows)
    table = pa.table(
        {
            "entity_id": ids,
            "score": scores,
            "label": pa.array(np.where(scores > 0.5, "true", "false")),
        }
    )
    columns = "entity_id, score, label"
    if all_columns:
        table = pa.table(
            {
                "model_version_id": pa.array(np.ones(rows, dtype=np.int64)),
                **{name: table.column(name) for name in table.column_names},
                "scored_at": pa.array(
                    [datetime.datetime.now(datetime.UTC)] * rows, pa.timestamp("us", tz="UTC")
                ),
                "run_id": pa.array(["bench-run-0001"] * rows),
            }
        )
        columns = "model_version_id, entity_id, score, label, scored_at, run_id"
    import pyarrow.csv as csv

    buffer = io.BytesIO()
    csv.write_csv(table, buffer, csv.WriteOptions(include_header=False, quoting_style="needed"))
    buffer.seek(0)
    name = "raw_all" if all_columns else "raw"
    with database.transaction(url, hint="") as cur:
        cur.execute(f"DROP TABLE IF EXISTS bench.{name}")
        cur.execute(TABLE_DDL.format(name=name))
    with database.transaction(url, hint="") as cur:
        started = time.perf_counter()
        cur.copy_expert(f"COPY bench.{name} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--skip-to-sql", action="store_true", help="leave the slowest baseline out")
    args = parser.parse_args()

    base = Settings()
    work = base.var_dir / "bench" / "pipeline"
    shutil.rmtree(work / "lake", ignore_errors=True)
    url = fresh_database(base)
    settings = base.model_copy(
        update={
            "database_url": SecretStr(url),
            "lake_uri": str(work / "lake"),
            "models_root": str(work / "models"),
        }
    )
    layout = feature_layout(load_contract(settings.contracts_dir, "customers", 1))
    bundles = Path(tempfile.mkdtemp(prefix="bench-bundles-"))
    db = Database.from_settings(settings)
    fitted = {kind: register(settings, db, kind, bundles) for kind in args.models}
    spark = spark_session(settings, "bench-pipeline")

    warm = work / "input-warm-up"
    if not warm.exists():
        generate(warm, 50_000)
    for kind, (_, version) in fitted.items():  # JIT, Python workers, numba caches
        run_pipeline(spark, settings, db, warm, version.model, f"warm-{kind}")

    results = []
    for rows in args.rows:
        data = work / f"input-{rows}"
        if not data.exists():
            took, _ = timed(lambda: generate(data, rows))  # noqa: B023
            print(f"generated {rows:,} rows in {took:.1f}s: {data}")
        for kind, (pipeline, version) in fitted.items():
            ours = run_pipeline(spark, settings, db, data, version.model, f"{kind}-{rows}")
            hand = expert(url, data, pipeline, layout)
            slow = None if args.skip_to_sql else to_sql(url, data, pipeline, layout)
            floor3 = raw_copy(url, int(ours["rows"]), all_columns=False)
            floor6 = raw_copy(url, int(ours["rows"]), all_columns=True)
            results.append((rows, kind, ours, hand, slow, floor3, floor6))
            report(rows, kind, ours, hand, slow, floor3, floor6)
    print("\nsummary")
    print(
        f"{'rows':>10} {'model':<20} {'pipeline s':>10} {'expert s':>9} {'to_sql s':>9} "
        f"{'vs expert':>9} {'vs to_sql':>9} {'publish/COPY3':>13} {'publish/COPY6':>13}"
    )
    for rows, kind, ours, hand, slow, floor3, floor6 in results:
        to_sql_s = f"{slow['total']:9.1f}" if slow else f"{'-':>9}"
        versus = f"{slow['total'] / ours['total']:8.2f}x" if slow else f"{'-':>9}"
        print(
            f"{rows:>10,} {kind:<20} {ours['total']:10.1f} {hand['total']:9.1f} {to_sql_s} "
            f"{hand['total'] / ours['total']:8.2f}x {versus} "
            f"{floor3 / ours['publish']:13.2f} {floor6 / ours['publish']:13.2f}"
        )
    shutil.rmtree(bundles, ignore_errors=True)


def report(
    rows: int,
    kind: str,
    ours: dict[str, Any],
    hand: dict[str, float],
    slow: dict[str, float] | None,
    floor3: float,
    floor6: float,
) -> None:
    n = ours["rows"]
    print(f"\n{rows:,} input rows, {kind} ({n:,} accepted and published)")
    for stage in ("ingest", "score", "publish", "total"):
        print(f"  pipeline {stage:<8} {ours[stage]:7.1f}s  {rows / ours[stage]:>12,.0f} rows/s")
    print(f"  publish detail: {ours['publish_detail']}")
    for name, figures in (("expert", hand), ("to_sql", slow)):
        if figures:
            parts = ", ".join(f"{k} {v:.1f}s" for k, v in figures.items())
            print(f"  {name:<8} {parts}  ({rows / figures['total']:,.0f} rows/s)")
    print(f"  raw COPY, 3 columns: {floor3:.1f}s ({n / floor3:,.0f} rows/s)")
    print(f"  raw COPY, 6 columns: {floor6:.1f}s ({n / floor6:,.0f} rows/s)")


if __name__ == "__main__":
    main()
