"""One rule set, two runtimes: ingest's Spark expressions and the Python check of a score
request give the same verdict on every value of one corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs import validation
from jobs.batch_reader import read_batch
from precompute import rules
from precompute.contracts import Contract, parse_contract

CONTRACT = """
name = "corpus"
version = 1

[entity_id]
name = "id"
type = "string"
nullable = false
max_length = 20

[[features]]
name = "n"
type = "long"
min = -5
max = 1000

[[features]]
name = "x"
type = "double"
min = 0
max = 1

[[features]]
name = "flag"
type = "boolean"

[[features]]
name = "day"
type = "date"

[[features]]
name = "at"
type = "timestamp"

[[features]]
name = "plan"
type = "string"
nullable = false
allowed = ["basic", "plus"]

[[features]]
name = "note"
type = "string"
max_length = 5
"""
BASE = {
    "n": 1,
    "x": 0.5,
    "flag": True,
    "day": "2026-11-01",
    "at": "2026-11-01T10:00:00Z",
    "plan": "basic",
    "note": "ok",
}
# Values per column: JSON numbers, strings, booleans, nulls, nested values, edge forms.
CORPUS: dict[str, list[Any]] = {
    "id": ["ok", "", "   ", "\t", "a\x00b", "a\x1fb", "x" * 21, 42, True, None, "é" * 20],
    "n": [
        0,
        12,
        -5,
        -6,
        1000,
        1001,
        "12",
        "+7",
        " 7",
        "1_000",
        "0x10",
        12.0,
        1e3,
        2**63,
        2**63 - 1,
        -(2**63),
        "9223372036854775808",
        True,
        "true",
        "",
        None,
        [1],
        {"a": 1},
        float("nan"),
        float("inf"),
        "1e2",
        "-0",
    ],
    "x": [
        0,
        0.5,
        "0.5",
        ".5",
        "5.",
        "+.5",
        "1e-1",
        "1E0",
        1,
        1.5,
        -0.0,
        "1e400",
        "NaN",
        "Infinity",
        float("inf"),
        "0,5",
        "",
        True,
        "abc",
        None,
        2**64,
        "1d",
    ],
    "flag": [True, False, "true", "TRUE", "False", "yes", "1", 1, 0, "", None, "t"],
    "day": [
        "2026-11-01",
        "2026-02-29",
        "2028-02-29",
        "2026-02-30",
        "0000-01-01",
        "0001-01-01",
        "20261101",
        "2026-11-01T00:00",
        "2026-1-1",
        5,
        "",
        None,
        "9999-12-31",
    ],
    "at": [
        "2026-11-01T10:00:00Z",
        "2026-11-01 10:00",
        "2026-11-01",
        "2026-11-01T10:00",
        "2026-11-01T10:00:00.123456+01:00",
        "2026-11-01T10:00:00.1234567",
        "2026-11-01T24:00",
        "2026-11-01T23:59:60",
        "2026",
        "2026-11-01T10:00:00+0100",
        "2026-11-01t10:00",
        1700000000,
        "",
        None,
        "0000-01-01T00:00:00Z",
    ],
    "plan": ["basic", "plus", "Basic", "gold", "", None, 7],
    "note": ["", "12345", "123456", "é" * 5, {"a": 1}, ["x"], None],
}


def records() -> list[dict[str, Any]]:
    """One record per corpus value: a valid record with that one value changed."""
    out = []
    for column, values in CORPUS.items():
        for index, value in enumerate(values):
            record = {"id": f"r-{column}-{index}"} | BASE | {column: value}
            out.append(record)
    return out


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    path = tmp_path_factory.mktemp("contracts") / "v1.toml"
    path.write_text(CONTRACT)
    return parse_contract(path)


def test_python_and_spark_give_the_same_verdict_on_every_value(
    spark: Any, contract: Contract, tmp_path: Path
) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records()]
    batch = tmp_path / "corpus.jsonl"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # The API's path: each line parsed as JSON, checked in Python.
    in_python = {}
    for line in lines:
        record = json.loads(line)
        in_python[line] = sorted(set(rules.check_record(contract, record)))

    # Ingest's path: the same lines read and validated by Spark.
    raw = read_batch(spark, [str(batch)], "json", contract)
    rows = validation.validate(raw, contract).select("_q_raw", "_q_reasons").collect()
    in_spark: dict[str, list[tuple[str, str]]] = {line: [] for line in lines}
    for row in rows:
        if row["_q_raw"] is not None:
            in_spark[row["_q_raw"]] = sorted({(r["code"], r["column"]) for r in row["_q_reasons"]})

    differ = {
        line: (in_python[line], in_spark[line])
        for line in lines
        if in_python[line] != in_spark[line]
    }
    assert not differ, "\n".join(f"{k}: python {p} spark {s}" for k, (p, s) in differ.items())
    # The corpus exercises every rule, both ways.
    seen = {code for verdict in in_python.values() for code, _ in verdict}
    assert seen == {"type_error", "null_required", "invalid_id", "out_of_range", "unknown_category"}
    assert sum(1 for verdict in in_python.values() if not verdict) > 30


def test_explain_names_what_each_column_needs(contract: Contract) -> None:
    problems = rules.check_record(contract, {"id": "a\x00", **BASE, "n": 2**63, "plan": "gold"})
    assert rules.explain(contract, problems) == (
        "id: must be at most 256 characters without control characters; "
        "n: must be a long written as a whole number within 64 bits; "
        "plan: must be one of basic, plus"
    )
