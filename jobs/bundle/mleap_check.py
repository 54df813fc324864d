"""MLeap's own JVM runtime as the judge of our bundles: score the same rows there and here.

`jvm/mleap/MleapScore.java` loads a bundle with MLeap's runtime (the JARs `make` fetched into the
JAR cache) in a JVM of its own, never in our Spark session, and writes the model node's outputs.
A bundle is right when MLeap loads it and its scores (a binary classifier's positive-class
probability, a multiclass classifier's whole probability vector, a regressor's prediction) equal
our runtime's within `TOLERANCE` on every row, including rows with missing values and categories
the model never saw (`with_edge_rows` adds those).
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable

from jobs.bundle.format import Bundle, BundleError, read_bundle
from jobs.bundle.program import build_program
from jobs.bundle.runtime import compile_bundle
from jobs.jars import jar_set
from precompute.settings import Settings, project_root

TOLERANCE = 1e-9
UNSEEN = "__unseen_category__"
TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Parity:
    """Our runtime's scores against MLeap's on the same rows."""

    rows: int
    max_difference: float
    worst_row: int | None

    @property
    def agrees(self) -> bool:
        return self.max_difference <= TOLERANCE

    def summary(self) -> str:
        verdict = "agree" if self.agrees else "DISAGREE"
        where = f" (row {self.worst_row})" if self.worst_row is not None and not self.agrees else ""
        return (
            f"MLeap's runtime and ours {verdict} on {self.rows} rows: largest score difference "
            f"{self.max_difference:.3g}{where}, tolerance {TOLERANCE:g}"
        )


def compare(bundles: Sequence[tuple[Path, pa.Table]], settings: Settings) -> list[Parity]:
    """Score each (bundle file, rows) pair with MLeap (one JVM for all) and with our runtime."""
    ours = [_our_scores(read_bundle(path), rows) for path, rows in bundles]
    theirs = mleap_scores(bundles, settings)
    results = []
    for (path, _), mine, other in zip(bundles, ours, theirs, strict=True):
        if mine.shape != other.shape:
            raise BundleError(
                f"MLeap scored {other.shape} values and our runtime {mine.shape} for {path}"
            )
        gaps = np.abs(mine - other).reshape(len(mine), -1).max(axis=1, initial=0.0)
        worst = int(np.argmax(gaps)) if gaps.size else None
        results.append(Parity(len(mine), float(gaps.max(initial=0.0)), worst))
    return results


def mleap_scores(
    bundles: Sequence[tuple[Path, pa.Table]],
    settings: Settings,
    inputs: Sequence[Sequence[tuple[str, str]]] | None = None,
) -> list[np.ndarray]:
    """MLeap's scores for each (bundle file, rows) pair, from one run of MleapScore.java.
    `inputs` names each bundle's (column, "numeric" or "string") inputs; by default they are
    read from the bundle as our runtime checks it (pass them for an op it does not run yet)."""
    classpath = ":".join(str(p) for p in jar_set("mleap", settings).files())
    program = project_root() / "jvm" / "mleap" / "MleapScore.java"
    with tempfile.TemporaryDirectory(prefix="mleap-check-") as scratch:
        args: list[str] = []
        for index, (path, rows) in enumerate(bundles):
            columns: list[tuple[str, str]] = (
                list(inputs[index])
                if inputs is not None
                else [(i.name, str(i.kind)) for i in build_program(read_bundle(path)).inputs]
            )
            request = Path(scratch, f"in-{index}.json")
            request.write_text(json.dumps(_frame(rows, columns)))
            args += [str(Path(path).resolve()), str(request), str(Path(scratch, f"out-{index}"))]
        done = subprocess.run(
            ["java", "-cp", classpath, str(program), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise BundleError(f"MLeap's runtime refused the bundle: {message[0]}")
        return [
            _scores(json.loads(Path(scratch, f"out-{index}").read_text()))
            for index in range(len(bundles))
        ]


def with_edge_rows(rows: pa.Table, bundle: Bundle) -> pa.Table:
    """`rows` plus one row with every input the model may see missing set to null, and one with
    every categorical input set to a category no model was trained on."""
    program = build_program(bundle)
    first = rows.slice(0, 1).to_pylist()
    if not first:
        return rows
    nulls = dict(first[0])
    unseen = dict(first[0])
    for column in program.inputs:
        if column.nulls_allowed:
            nulls[column.name] = None
        if column.kind == "string":
            unseen[column.name] = UNSEEN
    return pa.concat_tables([rows, pa.Table.from_pylist([nulls, unseen], schema=rows.schema)])


def _our_scores(bundle: Bundle, rows: pa.Table) -> np.ndarray:
    entity = (bundle.metadata.get("input_contract") or {}).get("entity_id", {}).get("name")
    plan = compile_bundle(bundle, "cpu", entity_id=entity or rows.column_names[0])
    batches = rows.combine_chunks().to_batches()
    if not batches:
        return np.empty(0, np.float64)
    return np.asarray(plan.values(batches[0]), dtype=np.float64)


def _frame(rows: pa.Table, inputs: list[tuple[str, str]]) -> dict[str, Any]:
    """A leap frame for MleapScore.java: numbers (and booleans, as 0/1) as doubles."""
    columns = []
    for name, kind in inputs:
        if name not in rows.column_names:
            raise BundleError(f"the rows to check have no column {name!r}, which the bundle reads")
        values = rows.column(name).to_pylist()
        if kind == "numeric":
            values = [None if v is None else float(v) for v in values]
        else:
            values = [None if v is None else str(v) for v in values]
        columns.append(values)
    return {
        "schema": [
            {"name": name, "type": "double" if kind == "numeric" else "string", "nullable": True}
            for name, kind in inputs
        ],
        "rows": [list(row) for row in zip(*columns, strict=True)] if columns else [],
    }


def _scores(output: dict[str, Any]) -> np.ndarray:
    """The score of each row: P(positive class) for a binary classifier, the probability of
    every class for a multiclass one (shape (n, K)), else the prediction."""
    names = {o["port"]: o["name"] for o in output["outputs"]}
    probability, prediction = names.get("probability"), names.get("prediction")
    scores: list[Any] = []
    for row in output["rows"]:
        if probability and row[probability] is not None and len(row[probability]) > 2:
            scores.append([math.nan if p is None else float(p) for p in row[probability]])
            continue
        value = row[probability][1] if probability else row[prediction]
        scores.append(math.nan if value is None else float(value))
    return np.asarray(scores, dtype=np.float64)


def check_rows(
    training_data: dict[str, Any] | None, input_path: str | None, columns: list[str], limit: int
) -> pa.Table:
    """Up to `limit` rows to check a model on: the file or folder given, else the exact data it
    was trained on (the Delta table at its recorded version, or the recorded files)."""
    where = input_path
    try:
        if input_path is None and training_data and "delta_table" in training_data:
            where = f"{training_data['delta_table']} (version {training_data['table_version']})"
            table = DeltaTable(training_data["delta_table"], version=training_data["table_version"])
            return table.to_pyarrow_dataset().head(limit, columns=columns)
        if input_path is None and training_data and "files" in training_data:
            where = training_data["files"]
        if where is None:
            raise BundleError("the version records no training data: pass --input PATH")
        fmt = "csv" if where.endswith((".csv", ".csv.gz")) else "parquet"
        return ds.dataset(where, format=fmt).head(limit, columns=columns)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"cannot read rows to check from {where}: {exc}") from exc
