"""The ingest job on a real local Spark, Delta tables on disk and the real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fetch_all

from jobs.batch_files import InputError
from jobs.ingest import IngestRequest, RejectedShareExceeded, ingest
from jobs.run_planning import landed_batches
from precompute.database import Database
from precompute.settings import Settings

HEADER = (
    "customer_id,age,tenure_months,monthly_spend,support_calls,discount_rate,plan,region,"
    "autopay,updated_at"
)
GOOD = "{id},34,12,50.5,1,0.1,basic,north,true,2026-11-01T10:00:00Z"
# One line per kind of bad input, and the reasons each must be quarantined with.
BAD_CSV = {
    "type": ("t1,abc,12,50.5,1,0.1,basic,north,true,2026-11-01T10:00:00Z", ("type_error", "age")),
    "null": ("n1,34,,50.5,1,0.1,basic,north,true,", ("null_required", "tenure_months")),
    "range": ("r1,34,12,-5,1,0.1,basic,north,true,", ("out_of_range", "monthly_spend")),
    "category": ("u1,34,12,50.5,1,0.1,gold,north,true,", ("unknown_category", "plan")),
    "blank id": (",34,12,50.5,1,0.1,basic,north,true,", ("null_required", "customer_id")),
    # Last: by RFC 4180 an opened quote runs on over line breaks to the next quote, so a line
    # after this one would be part of the same (corrupt) record.
    "corrupt": ('x1,34,"12', ("corrupt_line", None)),
}


def incoming(settings: Settings) -> Any:
    return deltalake.DeltaTable(f"{settings.lake_uri}/incoming/customers")


def quarantine(settings: Settings) -> Any:
    return deltalake.DeltaTable(f"{settings.lake_uri}/quarantine")


def write_csv(folder: Path, lines: list[str], name: str = "part-1.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([HEADER, *lines]) + "\n")
    return folder


def good_lines(n: int, prefix: str = "c") -> list[str]:
    return [GOOD.format(id=f"{prefix}{i}") for i in range(n)]


def request(path: Path, batch: str, **options: Any) -> IngestRequest:
    return IngestRequest(str(path), batch, "customers", run_id=f"run-{batch}", **options)


@pytest.fixture(scope="module")
def mixed_settings(settings: Settings, jobs_database: str, tmp_path_factory: Any) -> Settings:
    from pydantic import SecretStr

    lake = tmp_path_factory.mktemp("mixed") / "lake"
    return settings.model_copy(
        update={"database_url": SecretStr(jobs_database), "lake_uri": str(lake)}
    )


@pytest.fixture(scope="module")
def mixed_batch(spark: Any, mixed_settings: Settings) -> dict[str, Any]:
    """One CSV batch with 20 good rows, a duplicated id and one row of each bad kind,
    ingested once for the tests that read what it produced."""
    lines = [*good_lines(20), GOOD.format(id="d1"), GOOD.format(id="d1")]
    lines += [line for line, _ in BAD_CSV.values()]
    path = write_csv(Path(mixed_settings.lake_uri).parent / "landing" / "b1", lines)
    result = ingest(spark, mixed_settings, request(path, "b1", max_rejected_share=0.5))
    rows = quarantine(mixed_settings).to_pyarrow_table().to_pylist()
    return {"result": result, "quarantine": rows, "path": path}


@pytest.mark.parametrize("kind", list(BAD_CSV))
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(
    mixed_batch: dict[str, Any], kind: str
) -> None:
    line, (code, column) = BAD_CSV[kind]
    if kind == "corrupt":
        matching = [r for r in mixed_batch["quarantine"] if r["raw"] == line]
    else:
        key = line.split(",")[0] or None
        matching = [r for r in mixed_batch["quarantine"] if r["entity_id"] == key]
    assert len(matching) == 1, mixed_batch["quarantine"]
    assert {"code": code, "column": column} in matching[0]["reasons"]
    assert matching[0]["batch_id"] == "b1" and matching[0]["dataset"] == "customers"
    assert matching[0]["source_file"].endswith("part-1.csv")


def test_every_copy_of_a_duplicated_id_is_quarantined(mixed_batch: dict[str, Any]) -> None:
    copies = [r for r in mixed_batch["quarantine"] if r["entity_id"] == "d1"]
    assert len(copies) == 2
    assert all(
        r["reasons"] == [{"code": "duplicate_entity_id", "column": "customer_id"}] for r in copies
    )


def test_counts_add_up_and_are_recorded_on_the_run(
    mixed_batch: dict[str, Any], mixed_settings: Settings, jobs_database: str
) -> None:
    counts = mixed_batch["result"].counts
    assert (counts.read, counts.accepted, counts.quarantined) == (28, 20, 8)
    assert incoming(mixed_settings).to_pyarrow_table().num_rows == 20
    assert len(mixed_batch["quarantine"]) == 8
    run = fetch_all(
        jobs_database,
        "SELECT rows_read, rows_accepted, rows_quarantined, state FROM precompute.runs "
        "WHERE run_id = 'run-b1'",
    )
    stage = fetch_all(
        jobs_database,
        "SELECT state, rows_in, rows_out, rows_rejected FROM precompute.run_stages "
        "WHERE run_id = 'run-b1' AND stage = 'ingest'",
    )
    assert run == [(28, 20, 8, "running")]  # later stages finish the run
    assert stage == [("succeeded", 28, 20, 8)]


def test_accepted_rows_carry_typed_values_and_the_batch(
    mixed_batch: dict[str, Any], mixed_settings: Settings
) -> None:
    table = incoming(mixed_settings).to_pyarrow_table()
    assert table.schema.field("age").type == pa.float64()
    assert table.schema.field("tenure_months").type == pa.int64()
    assert table.schema.field("autopay").type == pa.bool_()
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert incoming(mixed_settings).metadata().partition_columns == ["ingest_date"]
    row = table.filter(pa.compute.equal(table["customer_id"], "c3")).to_pylist()[0]
    assert (row["age"], row["tenure_months"], row["plan"], row["batch_id"]) == (
        34.0,
        12,
        "basic",
        "b1",
    )


def test_rerunning_a_batch_adds_nothing(
    spark: Any, mixed_batch: dict[str, Any], mixed_settings: Settings
) -> None:
    versions = (incoming(mixed_settings).version(), quarantine(mixed_settings).version())
    again = ingest(
        spark, mixed_settings, request(mixed_batch["path"], "b1", max_rejected_share=0.5)
    )
    assert again.already_ingested
    assert again.counts == mixed_batch["result"].counts
    assert (incoming(mixed_settings).version(), quarantine(mixed_settings).version()) == versions
    assert incoming(mixed_settings).to_pyarrow_table().num_rows == 20
    # Both attempts are kept; the stage shows the one that did the work, not the no-op rerun.
    url = mixed_settings.database_url.get_secret_value()  # type: ignore[union-attr]
    assert fetch_all(
        url,
        "SELECT attempt, state, rows_in FROM precompute.run_stages "
        "WHERE run_id = 'run-b1' ORDER BY attempt",
    ) == [(1, "succeeded", 28), (2, "skipped", 28)]
    assert fetch_all(
        url, "SELECT state, attempt, attempts FROM analytics.run_stages WHERE run_id = 'run-b1'"
    ) == [("succeeded", 1, 2)]


def test_json_lines_keep_the_raw_line_and_flag_corrupt_ones(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    record = json.loads(
        '{"customer_id": "j1", "age": 40, "tenure_months": 3, "monthly_spend": 9.5, '
        '"support_calls": null, "discount_rate": 0, "plan": "plus", "region": "east", '
        '"autopay": false, "updated_at": "2026-11-01T00:00:00Z"}'
    )
    lines = [json.dumps(record | {"customer_id": f"j{i}"}) for i in range(9)]
    lines.append(json.dumps(record | {"customer_id": "j9", "age": 7}))
    lines.append('{"customer_id": "j10", "age": ')
    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "batch.jsonl").write_text("\n".join(lines) + "\n")
    result = ingest(spark, job_settings, request(folder, "j", max_rejected_share=0.5))
    assert result.counts is not None and (result.counts.accepted, result.counts.quarantined) == (
        9,
        2,
    )
    rows = {r["raw"]: r["reasons"] for r in quarantine(job_settings).to_pyarrow_table().to_pylist()}
    assert rows[lines[-1]] == [{"code": "corrupt_line", "column": None}]
    assert rows[lines[-2]] == [{"code": "out_of_range", "column": "age"}]


def test_parquet_non_finite_numbers_are_quarantined(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    table = pa.table(
        {
            "customer_id": ["p1", "p2", "p3"],
            "age": [30.0, float("nan"), float("inf")],
            "tenure_months": [1, 2, 3],
            "monthly_spend": [1.0, 2.0, 3.0],
            "support_calls": pa.array([None, None, None], pa.int64()),
            "discount_rate": [0.0, 0.0, 0.0],
            "plan": ["basic", "plus", "premium"],
            "region": ["north", "south", "west"],
            "autopay": [True, False, None],
            "updated_at": pa.array([None, None, None], pa.timestamp("us", tz="UTC")),
        }
    )
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(table, folder / "b.parquet")
    result = ingest(spark, job_settings, request(folder, "p", max_rejected_share=1.0))
    assert result.counts is not None and result.counts.accepted == 1
    reasons = {
        r["entity_id"]: r["reasons"]
        for r in quarantine(job_settings).to_pyarrow_table().to_pylist()
    }
    assert reasons["p2"] == [{"code": "type_error", "column": "age"}]  # NaN is not a number
    assert reasons["p3"] == [{"code": "type_error", "column": "age"}]  # nor is infinity


def test_a_missing_column_fails_before_anything_is_written(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "cols"
    folder.mkdir()
    header = HEADER.replace(",plan", "").replace(",region", "")
    (folder / "a.csv").write_text(header + "\nc1,34,12,50.5,1,0.1,true,\n")
    with pytest.raises(InputError, match=r"a\.csv is missing required columns plan, region"):
        ingest(spark, job_settings, request(folder, "m"))
    assert not Path(job_settings.lake_uri, "incoming").exists()
    assert not Path(job_settings.lake_uri, "quarantine").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: None, r"input .*/nothing does not exist"),
        (
            lambda folder: (folder / "x.parquet").write_bytes(b"not parquet"),
            r"cannot read .*x\.parquet",
        ),
        (lambda folder: (folder / "x.txt").write_text("a"), r"cannot tell the format of .*x\.txt"),
        (lambda folder: (folder / "x.csv").write_text(""), r"x\.csv is empty"),
    ],
)
def test_an_unreadable_input_fails_naming_the_file(
    spark: Any, job_settings: Settings, tmp_path: Path, make: Any, message: str, jobs_database: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    target = tmp_path / "nothing" if message.startswith("input") else folder
    with pytest.raises(InputError, match=message):
        ingest(spark, job_settings, request(target, "u"))
    assert not Path(job_settings.lake_uri, "incoming").exists()
    failed = fetch_all(
        jobs_database, "SELECT state, error FROM precompute.runs WHERE run_id = 'run-u'"
    )
    assert failed[0][0] == "failed" and "ingest:" in failed[0][1]


def test_too_many_rejects_fail_after_writing_the_quarantine_and_a_rerun_can_accept(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "r", [*good_lines(8), BAD_CSV["range"][0], BAD_CSV["type"][0]])
    with pytest.raises(RejectedShareExceeded, match=r"2 of 10 rows rejected \(20.0%"):
        ingest(spark, job_settings, request(path, "r", max_rejected_share=0.1))
    assert quarantine(job_settings).to_pyarrow_table().num_rows == 2
    assert not Path(job_settings.lake_uri, "incoming", "customers").exists()

    result = ingest(spark, job_settings, request(path, "r", max_rejected_share=0.25))
    assert result.counts is not None and result.counts.accepted == 8
    assert incoming(job_settings).to_pyarrow_table().num_rows == 8
    assert quarantine(job_settings).to_pyarrow_table().num_rows == 2  # not written twice


def test_a_killed_ingest_leaves_the_tables_unchanged_and_a_rerun_completes(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    first = write_csv(tmp_path / "k0", good_lines(5, prefix="first"))
    ingest(spark, job_settings, request(first, "k0"))
    lake = Path(job_settings.lake_uri)
    before = set(lake.rglob("*.parquet"))

    big = tmp_path / "k1"
    big.mkdir()
    table = pa.table({"customer_id": [f"k{i}" for i in range(400_000)]})
    for name, value in [
        ("age", 30.0),
        ("tenure_months", 1),
        ("monthly_spend", 1.0),
        ("support_calls", 0),
        ("discount_rate", 0.0),
        ("plan", "basic"),
        ("region", "north"),
        ("autopay", True),
    ]:
        table = table.append_column(name, pa.array([value] * table.num_rows))
    table = table.append_column(
        "updated_at", pa.nulls(table.num_rows, pa.timestamp("us", tz="UTC"))
    )
    for i in range(4):
        pq.write_table(table.slice(i * 100_000, 100_000), big / f"p{i}.parquet")
    env = os.environ | {
        "DATABASE_URL": job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "PRECOMPUTE_LAKE_URI": job_settings.lake_uri,
        "PRECOMPUTE_STAGE_LEASE_SECONDS": "3",
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "ingest",
            str(big),
            "--batch-id",
            "k1",
            "--dataset",
            "customers",
            "--run-id",
            "run-k1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not set(lake.rglob("*.parquet")) - before:
        time.sleep(0.05)
    assert set(lake.rglob("*.parquet")) - before, "the child never started writing"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()

    # Files the killed tasks wrote are in no table version (vacuum removes them later).
    assert incoming(job_settings).version() == 0
    assert incoming(job_settings).to_pyarrow_table().num_rows == 5
    # Its lease runs out: the run and its stage read as abandoned, not running for ever.
    url = job_settings.database_url.get_secret_value()  # type: ignore[union-attr]
    time.sleep(3.5)
    shown = "SELECT state FROM analytics.{} WHERE run_id = 'run-k1'"
    assert fetch_all(url, shown.format("runs")) == [("abandoned",)]
    assert fetch_all(url, shown.format("run_stages")) == [("abandoned",)]
    result = ingest(spark, job_settings, request(big, "k1"))
    assert result.counts is not None and result.counts.accepted == 400_000
    assert incoming(job_settings).to_pyarrow_table().num_rows == 400_005
    # The rerun took over: the dead attempt is kept as abandoned, the new one succeeded.
    assert fetch_all(
        url,
        "SELECT attempt, state FROM precompute.run_stages WHERE run_id = 'run-k1' ORDER BY attempt",
    ) == [(1, "abandoned"), (2, "succeeded")]


def test_the_planner_takes_landed_batches_and_sets_aside_one_whose_ingest_failed(
    spark: Any, job_settings: Settings
) -> None:
    db = Database.from_settings(job_settings)
    landing = Path(job_settings.landing_root)
    rejected = write_csv(landing / "s1", [*good_lines(1), BAD_CSV["range"][0], BAD_CSV["type"][0]])
    assert landed_batches(job_settings, "customers", db) == [("s1", str(rejected))]
    # Its ingest fails after recording its counts (two of three rows rejected): the batch is
    # not in the incoming table, and it is set aside, so it cannot fail every later run and
    # hold up the batches that land after it.
    with pytest.raises(RejectedShareExceeded):
        ingest(spark, job_settings, request(rejected, "s1"))
    assert fetch_all(
        job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "SELECT rows_read FROM precompute.runs WHERE run_id = 'run-s1'",
    ) == [(3,)]
    later = write_csv(landing / "s2", good_lines(2))
    assert landed_batches(job_settings, "customers", db) == [("s2", str(later))]
    # Scored by hand with a higher limit, it is ingested like any batch.
    ingest(spark, job_settings, request(rejected, "s1", max_rejected_share=0.9))
    ingest(spark, job_settings, request(later, "s2"))
    assert landed_batches(job_settings, "customers", db) == []
