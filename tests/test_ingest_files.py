"""Ingest with files as real producers write them: spreadsheet CSV exports (byte-order mark,
CRLF, RFC 4180 quoting), other encodings and bytes that are not text, Parquet from pandas,
polars and pyarrow with types that do not fit, empty and broken files. Each row ends up
accepted unchanged or quarantined with its reason; a file that cannot be read is refused in one
line that names it."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import deltalake
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fetch_all

from jobs.batch_files import InputError
from jobs.ingest import IngestRequest, ingest
from precompute.settings import Settings

HEADER = (
    "customer_id,age,tenure_months,monthly_spend,support_calls,discount_rate,plan,region,"
    "autopay,updated_at"
)
ROW = "{id},34,12,50.5,1,0.1,basic,north,true,2026-11-01T10:00:00Z"


def run(spark: Any, settings: Settings, folder: Path, batch: str, **options: Any) -> Any:
    request = IngestRequest(str(folder), batch, "customers", run_id=f"run-{batch}", **options)
    return ingest(spark, settings, request)


def incoming(settings: Settings, batch: str) -> dict[str, dict[str, Any]]:
    rows = deltalake.DeltaTable(f"{settings.lake_uri}/incoming/customers").to_pyarrow_table()
    return {r["customer_id"]: r for r in rows.to_pylist() if r["batch_id"] == batch}


def quarantined(settings: Settings, batch: str) -> dict[str | None, dict[str, Any]]:
    rows = deltalake.DeltaTable(f"{settings.lake_uri}/quarantine").to_pyarrow_table()
    return {r["entity_id"]: r for r in rows.to_pylist() if r["batch_id"] == batch}


def write(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder


def test_a_spreadsheet_export_with_bom_crlf_and_rfc4180_quoting(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    lines = [
        HEADER,
        ROW.format(id="e1"),
        # A quoted id holding a doubled quote, a separator and a line break.
        '"e2 ""the, second""\r\nline",34,12,50.5,1,0.1,basic,north,TRUE,2026-11-01 10:00',
        "café,34,12,50.5,,,plus,south,False,",
    ]
    content = "\ufeff" + "\r\n".join(lines) + "\r\n"  # "CSV UTF-8" as spreadsheets save it
    folder = write(tmp_path / "x", "export.csv", content.encode("utf-8"))

    result = run(spark, job_settings, folder, "xls", max_rejected_share=0.5)

    # Three rows, not four: the quoted line break is part of its field.
    assert (result.counts.read, result.counts.accepted) == (3, 2)
    rows = incoming(job_settings, "xls")
    assert set(rows) == {"e1", "café"}
    assert rows["café"]["autopay"] is False and rows["café"]["support_calls"] is None
    # An id with a line break cannot be looked up: quarantined. (A line break inside a quoted
    # field reads as "\n" whatever the file's line ending: the CSV parser normalises it.)
    [(entity, record)] = quarantined(job_settings, "xls").items()
    assert entity == 'e2 "the, second"\nline'
    assert record["reasons"] == [{"code": "invalid_id", "column": "customer_id"}]


def test_bytes_that_are_not_utf8_quarantine_their_row_unchanged(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    content = (
        (HEADER + "\n").encode()
        + ROW.format(id="good-é").encode("utf-8")
        + b"\n"
        + ROW.format(id="caf\xe9").encode("latin-1")  # a Latin-1 byte in a UTF-8 file
        + b"\n"
        + ROW.format(id="u2").encode()
        + b"\n"
    )
    folder = write(tmp_path / "enc", "mixed.csv", content)

    result = run(spark, job_settings, folder, "enc", max_rejected_share=0.5)

    assert (result.counts.read, result.counts.accepted) == (3, 2)
    assert set(incoming(job_settings, "enc")) == {"good-é", "u2"}  # never changed to U+FFFD
    [bad] = quarantined(job_settings, "enc").values()
    assert bad["reasons"] == [{"code": "encoding_error", "column": None}]
    # The bytes as they came, one character per byte: 0xE9 is kept, not replaced.
    assert '"customer_id":"caf\u00e9"' in bad["raw"] and "\ufffd" not in bad["raw"]
    assert bad["raw"].encode("latin-1").count(b"\xe9") == 1


def test_a_contract_in_windows_1252_reads_its_exports_and_flags_undefined_bytes(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    contracts = tmp_path / "contracts" / "customers"
    contracts.mkdir(parents=True)
    source = Path(job_settings.contracts_dir, "customers", "v1.toml").read_text()
    (contracts / "v1.toml").write_text('encoding = "windows-1252"\n' + source)
    settings = job_settings.model_copy(update={"contracts_dir": contracts.parent})
    content = (
        (HEADER + "\r\n").encode()
        + ROW.format(id="Zoë €").encode("cp1252")
        + b"\r\n"
        + ROW.format(id="x\x81").encode("latin-1")  # 0x81 means nothing in windows-1252
        + b"\r\n"
    )
    folder = write(tmp_path / "w", "export.csv", content)

    run(spark, settings, folder, "cp", max_rejected_share=0.5)

    assert set(incoming(settings, "cp")) == {"Zoë €"}
    assert [r["reasons"] for r in quarantined(settings, "cp").values()] == [
        [{"code": "encoding_error", "column": None}]
    ]


def test_ids_lookups_cannot_serve_are_quarantined_as_invalid(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    content = "\n".join(
        [HEADER, ROW.format(id="fine"), ROW.format(id="nul\x00id"), ROW.format(id="bell\x07")]
    )
    folder = write(tmp_path / "ids", "ids.csv", content.encode())
    table = pa.table({"customer_id": ["tab\tid", "y" * 57, "z" * 65]})
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
        table = table.append_column(name, pa.array([value] * 3))
    table = table.append_column("updated_at", pa.nulls(3, pa.timestamp("us", tz="UTC")))
    pq.write_table(table, tmp_path / "ids.parquet")

    run(spark, job_settings, folder, "ids", max_rejected_share=1.0)
    run(spark, job_settings, tmp_path / "ids.parquet", "ids-pq", max_rejected_share=1.0)

    reasons = {
        k: [r["code"] for r in v["reasons"]] for k, v in quarantined(job_settings, "ids").items()
    }
    assert reasons == {"nul\x00id": ["invalid_id"], "bell\x07": ["invalid_id"]}
    assert set(incoming(job_settings, "ids")) == {"fine"}
    parquet = {
        k: [r["code"] for r in v["reasons"]] for k, v in quarantined(job_settings, "ids-pq").items()
    }
    # 65 characters is over the contract's max_length of 64.
    assert parquet == {"tab\tid": ["invalid_id"], "z" * 65: ["out_of_range"]}


def customers_frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"p{i}" for i in range(n)],
            "age": [30.0 + i for i in range(n)],
            "tenure_months": list(range(n)),
            "monthly_spend": [10.0] * n,
            "support_calls": [1] * n,
            "discount_rate": [0.1] * n,
            "plan": ["basic"] * n,
            "region": ["east"] * n,
            "autopay": [True] * n,
            "updated_at": pd.to_datetime(["2026-11-01 10:00"] * n),  # naive: taken as UTC
        }
    )


def test_parquet_from_pandas_and_polars_is_read_as_written(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    frame = customers_frame()
    (tmp_path / "pd").mkdir()
    frame.to_parquet(tmp_path / "pd" / "a.parquet")  # with pandas' index column
    run(spark, job_settings, tmp_path / "pd", "pd")
    (tmp_path / "pl").mkdir()
    # polars writes large strings, and its own integer widths.
    pl.from_pandas(frame).with_columns(pl.col("tenure_months").cast(pl.UInt32)).write_parquet(
        tmp_path / "pl" / "a.parquet"
    )
    run(spark, job_settings, tmp_path / "pl", "pl")
    for batch in ("pd", "pl"):
        rows = incoming(job_settings, batch)
        assert sorted(rows) == ["p0", "p1", "p2"], batch
        assert rows["p2"]["tenure_months"] == 2 and rows["p2"]["age"] == 32.0
        assert rows["p0"]["updated_at"].isoformat() == "2026-11-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("column", "values", "found"),
    [
        ("tenure_months", pa.array([True, False, True]), "bool"),
        ("tenure_months", pa.array([1.0, 2.5, 3.0]), "double"),
        ("updated_at", pa.array([1_700_000_000_000_000] * 3, pa.int64()), "int64"),
        ("support_calls", pa.array([1, 2, 3], pa.uint64()), "uint64"),
        ("autopay", pa.array([1, 0, 1], pa.int8()), "int8"),
    ],
)
def test_parquet_types_that_do_not_fit_are_refused_not_reinterpreted(
    spark: Any, job_settings: Settings, tmp_path: Path, column: str, values: Any, found: str
) -> None:
    table = pa.Table.from_pandas(customers_frame(), preserve_index=False)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(table, tmp_path / "typed.parquet")
    with pytest.raises(InputError, match=rf"typed\.parquet: column {column} is {found}"):
        run(spark, job_settings, tmp_path / "typed.parquet", f"t-{column}-{found}")
    assert not Path(job_settings.lake_uri, "incoming").exists()


def test_a_header_only_csv_is_a_recorded_run_with_no_rows(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    folder = write(tmp_path / "h", "empty.csv", (HEADER + "\r\n").encode())
    result = run(spark, job_settings, folder, "h")
    assert (result.counts.read, result.counts.accepted, result.counts.quarantined) == (0, 0, 0)
    [(state, read)] = fetch_all(
        job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "SELECT state, rows_read FROM precompute.runs WHERE run_id = 'run-h'",
    )
    assert (state, read) == ("running", 0)  # ingest is its first stage; score and publish follow


def test_a_truncated_gzip_is_refused_in_one_line_naming_the_file(
    spark: Any, job_settings: Settings, tmp_path: Path
) -> None:
    rows = "\n".join([HEADER] + [ROW.format(id=f"g{i}") for i in range(20_000)])
    packed = gzip.compress(rows.encode())
    folder = write(tmp_path / "gz", "part.csv.gz", packed[: len(packed) // 2])
    with pytest.raises(InputError) as refused:
        run(spark, job_settings, folder, "gz")
    message = str(refused.value)
    assert message == (
        f"cannot read {folder / 'part.csv.gz'}: EOFException: Unexpected end of input stream"
    )
    assert "\n" not in message and "at org." not in message
