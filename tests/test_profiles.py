"""Batch and training profiles, feature drift and the batch catalogue, on real Spark and
PostgreSQL, against figures computed here with pandas and numpy on the same rows."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fetch_all, settings_under
from pyspark.sql import Observation

from jobs import drift_check
from jobs.feature_drift import feature_drift, thresholds_for
from jobs.fitting import train
from jobs.ingest import IngestRequest, ingest
from jobs.profiles import (
    QUANTILES,
    SKETCH_SAMPLE,
    batch_profile,
    profile_aggregates,
    quantile_name,
    training_profile,
)
from jobs.publish import publish
from jobs.registry import ModelVersion
from jobs.run_check import RunCheckFailed, check_run
from jobs.sample_data import customers, with_bad_rows
from jobs.score import ScoreRequest, score
from jobs.train_request import TrainRequest
from precompute import database
from precompute.contracts import load_contract, parse_contract
from precompute.database import Database
from precompute.settings import Settings

MODEL = "churn-profiles"
RANK_ERROR = 0.005
NUMBERS = ("age", "tenure_months", "monthly_spend", "support_calls", "discount_rate")


@dataclass(frozen=True)
class Setup:
    settings: Settings
    db: Database
    admin_url: str
    reader_url: str
    version: ModelVersion
    training: pa.Table
    landing: Path


@pytest.fixture(scope="module")
def setup(
    spark: Any, settings: Settings, jobs_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    root = tmp_path_factory.mktemp("profiles")
    job_settings = settings_under(settings, jobs_database, root)
    training = customers(3000, seed=11)
    folder = root / "training"
    folder.mkdir()
    pq.write_table(training, folder / "part-0.parquet")
    db = Database.from_settings(job_settings)
    request = TrainRequest(
        model=MODEL,
        dataset="customers",
        kind="logistic_regression",
        input_path=str(folder),
        aliases=("champion",),
    )
    version = train(spark, job_settings, db, request).version
    return Setup(
        job_settings,
        db,
        jobs_database,
        database.with_role(jobs_database, "reader", settings),
        version,
        training,
        root / "landing",
    )


def run_batch(spark: Any, setup: Setup, batch_id: str, parts: list[pa.Table]) -> Path:
    """Land the batch as parquet files, ingest, score and publish it as run `batch_id`."""
    folder = setup.landing / batch_id
    folder.mkdir(parents=True)
    for k, part in enumerate(parts):
        pq.write_table(part, folder / f"part-{k}.parquet")
    request = IngestRequest(str(folder), batch_id, "customers", run_id=batch_id)
    ingest(spark, setup.settings, request)
    score(spark, setup.settings, setup.db, ScoreRequest(MODEL, batch_id=batch_id, run_id=batch_id))
    publish(spark, setup.settings, setup.db, batch_id)
    return folder


def profile_rows(setup: Setup, where: str, params: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    columns = (
        "feature, rows, missing, missing_share, min_value, max_value, mean, std, quantiles, "
        "bins, top_values, outside_share, first_time, last_time"
    )
    rows = fetch_all(
        setup.reader_url, f"SELECT {columns} FROM analytics.feature_profiles WHERE {where}", params
    )
    names = [c.strip() for c in columns.split(",")]
    return {r[0]: dict(zip(names, r, strict=True)) for r in rows}


def assert_numbers_match(profile: dict[str, Any], values: pd.Series, rows: int) -> None:
    present = values.dropna().to_numpy(dtype=np.float64)
    assert (profile["rows"], profile["missing"]) == (rows, rows - present.size)
    assert profile["min_value"] == present.min()
    assert profile["max_value"] == present.max()
    assert profile["mean"] == pytest.approx(present.mean(), rel=1e-12)
    assert profile["std"] == pytest.approx(present.std(ddof=0), rel=1e-9)
    # The KLL sketch's quantile: its rank is within the sketch's error (0.28% at k = 1000,
    # 99% confidence; 0.5% allowed here) of q's.
    ordered = np.sort(present)
    slack = RANK_ERROR + 1 / present.size
    for q in QUANTILES:
        v = profile["quantiles"][quantile_name(q)]
        below = np.searchsorted(ordered, v, side="left") / present.size
        upto = np.searchsorted(ordered, v, side="right") / present.size
        assert below - slack <= q <= upto + slack, (q, v, below, upto)


def test_a_batch_profile_matches_pandas_on_the_accepted_rows(spark: Any, setup: Setup) -> None:
    batch = with_bad_rows(customers(2000, seed=12, first_id=10_000, label=False), bad=30)
    plan = batch.column("plan").to_pylist()
    plan[30:40] = ["gold"] * 10  # outside the allowed list: quarantined, and counted as outside
    batch = batch.set_column(batch.schema.get_field_index("plan"), "plan", pa.array(plan))
    run_batch(spark, setup, "profiled-1", [batch])

    accepted = batch.slice(40).to_pandas()
    got = profile_rows(setup, "subject = 'batch' AND batch_id = %s", ("profiled-1",))
    assert set(got) == {*NUMBERS, "plan", "region", "autopay", "updated_at"}
    for name in NUMBERS:
        assert_numbers_match(got[name], accepted[name], 1960)
        # Counted on the training deciles the model version stored.
        edges = np.asarray(got[name]["bins"]["edges"])
        present = accepted[name].dropna().to_numpy(dtype=np.float64)
        want = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
        counts = np.asarray(got[name]["bins"]["counts"])
        assert counts.sum() == pytest.approx(present.size, abs=len(edges))
        # Each bin's count is the difference of two ranks read off the sketch.
        assert np.all(np.abs(counts - want) <= 2 * RANK_ERROR * present.size + 1), (counts, want)
    plans = accepted["plan"].value_counts()
    assert {v["value"]: v["count"] for v in got["plan"]["top_values"]} == {
        p: int(plans.get(p, 0)) for p in ("basic", "plus", "premium")
    }
    assert got["plan"]["outside_share"] == 10 / 2000
    autopay = accepted["autopay"].dropna().astype(bool)
    assert {v["value"]: v["count"] for v in got["autopay"]["top_values"]} == {
        "true": int(autopay.sum()),
        "false": int((~autopay).sum()),
    }
    assert got["autopay"]["missing"] == int(accepted["autopay"].isna().sum())
    moment = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    assert (got["updated_at"]["first_time"], got["updated_at"]["last_time"]) == (moment, moment)

    # An unchanged population passes the check, every feature within its limits.
    summary = check_run(setup.settings, "profiled-1", 0.05, setup.settings.max_psi)
    assert "8 features within their drift limits" in summary
    levels = fetch_all(
        setup.reader_url,
        "SELECT feature, level, estimated FROM analytics.feature_drift WHERE run_id = %s",
        ("profiled-1",),
    )
    assert {f for f, _, _ in levels} == {*NUMBERS, "plan", "region", "autopay"}
    assert {(level, estimated) for _, level, estimated in levels} == {("ok", False)}


def test_the_training_profile_is_stored_with_the_model_version(setup: Setup) -> None:
    frame = setup.training.to_pandas()
    got = profile_rows(
        setup,
        "subject = 'training' AND model = %s AND version = %s",
        (MODEL, setup.version.version),
    )
    assert set(got) == {*NUMBERS, "plan", "region", "autopay"}
    for name in NUMBERS:
        present = frame[name].dropna().to_numpy(dtype=np.float64)
        assert_numbers_match(got[name], frame[name], 3000)
        for q in QUANTILES:  # exact: numpy's own quantiles
            assert got[name]["quantiles"][quantile_name(q)] == float(np.quantile(present, q))
    regions = frame["region"].value_counts()
    assert {v["value"]: v["count"] for v in got["region"]["top_values"]} == regions.to_dict()


def test_a_batch_with_one_feature_shifted_fails_the_check_naming_only_it(
    spark: Any, setup: Setup
) -> None:
    batch = customers(2000, seed=13, first_id=20_000, label=False)
    older = np.minimum(batch.column("age").to_numpy() + 25, 120)
    batch = batch.set_column(batch.schema.get_field_index("age"), "age", pa.array(older))
    run_batch(spark, setup, "drifted-1", [batch])

    with pytest.raises(RunCheckFailed) as failure:
        check_run(setup.settings, "drifted-1", 0.05, setup.settings.max_psi)
    clause = re.search(r"over the fail threshold: (.*?)(;|$)", str(failure.value))
    assert clause is not None
    assert re.fullmatch(r"age \(PSI \d+\.\d+ > 0\.25\)", clause.group(1)), clause.group(1)
    rows = fetch_all(
        setup.reader_url,
        "SELECT feature, level, psi FROM analytics.feature_drift WHERE run_id = 'drifted-1' "
        "ORDER BY psi DESC",
    )
    assert [(f, level) for f, level, _ in rows if level != "ok"] == [("age", "fail")]
    # The PSI on the training deciles.
    edges = np.unique(np.quantile(setup.training.column("age").to_numpy(), np.arange(1, 10) / 10))
    expected = np.bincount(np.searchsorted(edges, setup.training.column("age").to_numpy()))
    actual = np.bincount(np.searchsorted(edges, older), minlength=len(edges) + 1)
    e = np.maximum(expected / expected.sum(), 1e-4)
    a = np.maximum(actual / actual.sum(), 1e-4)
    # Close to the PSI numpy gives on the exact counts (the batch's are read off its sketch).
    assert rows[0][2] == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=0.02)

    # The run's report shows the drift table and the most drifted features' histograms.
    (html,) = fetch_all(
        setup.admin_url, "SELECT html FROM precompute.run_reports WHERE run_id = 'drifted-1'"
    )[0]
    section = html[html.index("<h2>Feature drift against the training data</h2>") :]
    assert re.search(r"<tr><td>age</td><td>psi</td>.*?✖ fail</td></tr>", section)
    assert re.findall(r"<h3>([^<]+)</h3>", section)[0] == "age"

    # The retraining signal: off by default; on, the check's function names the run.
    db = setup.db
    assert drift_check.retraining_due(setup.settings, db, ["drifted-1", "profiled-1"]) == []
    on = setup.settings.model_copy(update={"retrain_on_drift": True})
    assert drift_check.retraining_due(on, db, ["drifted-1", "profiled-1"]) == ["drifted-1"]


def test_the_catalogue_lists_a_batchs_files_sizes_rows_and_scoring_run(
    spark: Any, setup: Setup
) -> None:
    batch = customers(1500, seed=14, first_id=30_000, label=False)
    folder = run_batch(spark, setup, "catalogued-1", [batch.slice(0, 1000), batch.slice(1000)])

    files = fetch_all(
        setup.reader_url,
        "SELECT path, format, size_bytes FROM analytics.batch_files WHERE batch_id = %s "
        "ORDER BY path",
        ("catalogued-1",),
    )
    assert files == [
        (str(folder / name), "parquet", os.path.getsize(folder / name))
        for name in ("part-0.parquet", "part-1.parquet")
    ]
    (row,) = fetch_all(
        setup.reader_url,
        "SELECT file_count, total_bytes, rows_read, rows_accepted, landed_at, ingested_at, "
        "scored_by_run, scored_by_model, scored_by_version FROM analytics.batches "
        "WHERE batch_id = %s",
        ("catalogued-1",),
    )
    landed = datetime.datetime.fromtimestamp(folder.stat().st_mtime, datetime.UTC)
    assert row[:4] == (2, sum(size for _, _, size in files), 1500, 1500)
    assert abs((row[4] - landed).total_seconds()) < 1e-3
    assert row[4] <= row[5]
    assert row[6:] == ("catalogued-1", MODEL, setup.version.version)


def test_drift_read_off_quantiles_is_near_zero_for_one_population_and_large_for_a_shift(
    settings: Settings,
) -> None:
    """Without bins counted at ingest both sides' shares come from their quantiles."""
    contract = load_contract(settings.contracts_dir, "customers")
    reference = training_profile(customers(5000, seed=21), contract)
    same = training_profile(customers(5000, seed=22), contract)
    shifted_table = customers(5000, seed=23)
    spend = shifted_table.column("monthly_spend").to_numpy() * 1.8
    shifted_table = shifted_table.set_column(
        shifted_table.schema.get_field_index("monthly_spend"), "monthly_spend", pa.array(spend)
    )
    shifted = training_profile(shifted_table, contract)
    without_bins = [
        type(p)(**{**vars(p), "bins": None}) if p.bins else p for p in [*same, *shifted]
    ]
    limits = thresholds_for(settings, contract)
    calm = {d.feature: d for d in feature_drift(reference, without_bins[: len(same)], limits)}
    moved = {d.feature: d for d in feature_drift(reference, without_bins[len(same) :], limits)}
    assert all(d.estimated for d in calm.values() if d.measure == "psi")
    assert max(d.psi for d in calm.values()) < 0.02
    assert moved["monthly_spend"].psi > 0.25 and moved["monthly_spend"].level == "fail"
    assert [f for f, d in moved.items() if d.level != "ok"] == ["monthly_spend"]


SAMPLED_CONTRACT = """
name = "sampled"
version = 1
[entity_id]
name = "id"
type = "long"
nullable = false
[event_time]
name = "seen_at"
type = "timestamp"
nullable = false
[[features]]
name = "rising"
type = "double"
nullable = false
[[features]]
name = "noise"
type = "double"
nullable = false
[[features]]
name = "visits"
type = "long"
nullable = true
[[features]]
name = "flag"
type = "boolean"
nullable = false
[[features]]
name = "tier"
type = "string"
nullable = false
allowed = ["a", "b", "c"]
"""


def test_sketches_fed_a_sample_keep_the_exact_figures_exact_and_ranks_close(
    spark: Any, tmp_path: Path
) -> None:
    """A batch larger than SKETCH_SAMPLE: its sketches see a uniform sample, here one row in 40
    of rows that come sorted (so a sample taken from the front of each task would be far off),
    while count, missing, min, max, mean, std and category counts stay exact."""
    path = tmp_path / "sampled.toml"
    path.write_text(SAMPLED_CONTRACT)
    contract = parse_contract(path)
    rows = 300_000
    rng = np.random.default_rng(3)
    visits = rng.poisson(4.0, rows).astype("float64")
    visits[rng.random(rows) < 0.1] = np.nan
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            # In microseconds: Spark reads nanosecond Parquet timestamps as numbers.
            "seen_at": (
                pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s")
            ).astype("datetime64[us, UTC]"),
            "rising": np.arange(rows) * 0.5,
            "noise": rng.normal(100.0, 15.0, rows),
            "visits": pd.array(visits, dtype="Int64"),
            "flag": rng.random(rows) < 0.3,
            "tier": rng.choice(["a", "b", "c", "z"], rows),
        }
    )
    folder = tmp_path / "batch"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(rows), 3)):  # three tasks, merged
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / f"part-{k}.parquet")
    batch = spark.read.parquet(str(folder))
    edges = {"rising": [15_000.0 * k for k in range(1, 10)], "noise": [90.0, 100.0, 110.0]}
    figures = Observation()
    observed = profile_aggregates(spark, contract, edges, {}, rows=40 * SKETCH_SAMPLE, seed=1)
    batch.observe(figures, *observed).write.format("noop").mode("overwrite").save()
    got = {p.feature: p for p in batch_profile(contract, figures.get, edges, {})}

    # The sketches took one row in 40 (a binomial count: within five standard deviations).
    for name, figured in zip(
        ("rising", "noise", "visits"), figures.get["_p_columns"][:3], strict=True
    ):
        expected = frame[name].count() / 40
        assert abs(figured["sketched"] - expected) <= 5 * expected**0.5, (name, figured)
    for name in ("rising", "noise", "visits"):
        present = frame[name].dropna().to_numpy(dtype=np.float64)
        profile = got[name]
        assert (profile.rows, profile.missing) == (rows, rows - present.size)
        assert (profile.minimum, profile.maximum) == (present.min(), present.max())
        assert profile.mean == pytest.approx(present.mean(), rel=1e-12)
        assert profile.std == pytest.approx(present.std(ddof=0), rel=1e-9)
        # A 7,500-row sample: a rank's standard error is at most 0.6% (3% allowed).
        ordered = np.sort(present)
        assert profile.quantiles is not None
        for q in QUANTILES:
            v = profile.quantiles[quantile_name(q)]
            below = np.searchsorted(ordered, v, side="left") / present.size
            upto = np.searchsorted(ordered, v, side="right") / present.size
            assert below - 0.03 <= q <= upto + 0.03, (name, q, v, below, upto)
        if name in edges:
            cut = np.asarray(edges[name])
            want = np.bincount(np.searchsorted(cut, present, side="left"), minlength=cut.size + 1)
            assert profile.bins is not None
            counts = np.asarray(profile.bins["counts"])
            assert np.all(np.abs(counts - want) <= 0.03 * rows), (name, counts, want)
    assert got["flag"].top_values is not None and got["tier"].top_values is not None
    assert {v["value"]: v["count"] for v in got["flag"].top_values} == {
        "true": int(frame.flag.sum()),
        "false": int((~frame.flag).sum()),
    }
    tiers = frame.tier.value_counts()
    assert {v["value"]: v["count"] for v in got["tier"].top_values} == {
        t: int(tiers[t]) for t in ("a", "b", "c")
    }
    assert (got["seen_at"].first, got["seen_at"].last) == (
        frame.seen_at.min().to_pydatetime(),
        frame.seen_at.max().to_pydatetime(),
    )


def test_a_column_with_no_value_in_the_sample_keeps_its_exact_figures_and_no_quantiles(
    spark: Any, tmp_path: Path
) -> None:
    """A sparse column of a huge batch: the sample (one row in a million here) takes none of its
    two values, so it has no quantiles or bins, and drift leaves it out instead of failing."""
    path = tmp_path / "sampled.toml"
    path.write_text(SAMPLED_CONTRACT)
    contract = parse_contract(path)
    rows = 2000
    visits: list[int | None] = [None] * rows
    visits[5], visits[1500] = 7, 2
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "seen_at": pa.array([datetime.datetime(2026, 11, 1)] * rows, pa.timestamp("us", "UTC")),
            "rising": pa.array([float(k) for k in range(rows)]),
            "noise": pa.array([1.0] * rows),
            "visits": pa.array(visits, pa.int64()),
            "flag": pa.array([True] * rows),
            "tier": pa.array(["a"] * rows),
        }
    )
    pq.write_table(table, tmp_path / "batch.parquet")
    batch = spark.read.parquet(str(tmp_path / "batch.parquet"))
    figures = Observation()
    observed = profile_aggregates(spark, contract, {}, {}, rows=10**6 * SKETCH_SAMPLE, seed=4)
    batch.observe(figures, *observed).write.format("noop").mode("overwrite").save()
    got = {p.feature: p for p in batch_profile(contract, figures.get, {}, {})}

    visited = got["visits"]
    assert (visited.missing, visited.minimum, visited.maximum, visited.mean) == (1998, 2, 7, 4.5)
    assert visited.quantiles is None and visited.bins is None
    reference = training_profile(table, contract)
    limits = thresholds_for(Settings(), contract)
    assert "visits" not in {d.feature for d in feature_drift(reference, list(got.values()), limits)}
