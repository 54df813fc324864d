"""The labelled rows a model is trained on, read from a lake table or batch files and held to
the dataset's contract plus its label: a row that breaks it fails the run, naming rows and
reasons, since a model should not silently learn from fewer or different rows than asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import validation
from jobs.batch_files import batch_files, check_columns, detect_format
from jobs.batch_reader import read_batch
from jobs.lake import lake
from jobs.raw_batch import SOURCE_FILE, RawBatch
from jobs.train_request import TrainingDataError, TrainRequest
from precompute.contracts import Contract
from precompute.settings import Settings

SHOWN_REJECTS = 5


def read_training_data(
    spark: SparkSession, settings: Settings, request: TrainRequest, labelled: Contract
) -> tuple[pa.Table, dict[str, Any]]:
    """The validated rows (entity id, features, label) and a reference to where they came from."""
    if (request.input_path is None) == (request.table is None):
        raise TrainingDataError("give the training data as --input PATH or --table NAME (one)")
    if request.table is not None:
        engine = lake(spark, settings)
        if not engine.exists(request.table):
            raise TrainingDataError(f"no Delta table {request.table!r} under {settings.lake_uri}")
        version = request.table_version
        if version is None:
            version = engine.version(request.table)
        uri = engine.table_uri(request.table)
        df = engine.read(request.table, version)
        check_columns(labelled, set(df.columns), f"table {uri} (version {version})")
        df = df.select(*[c.name for c in labelled.columns], F.lit(uri).alias(SOURCE_FILE))
        raw = RawBatch(df, None)
        source: dict[str, Any] = {"delta_table": uri, "table_version": version}
    else:
        assert request.input_path is not None
        files = batch_files(request.input_path)
        raw = read_batch(spark, files, detect_format(files), labelled)
        source = {"files": request.input_path, "file_count": len(files)}

    validated = validation.validate(raw, labelled)
    wanted = [labelled.entity_id.name, *(c.name for c in labelled.features)]
    table = validated.select(*wanted, "_q_entity_id", "_q_reasons", validation.ROUTE).toArrow()
    rejected = np.asarray(
        table.column(validation.ROUTE).to_numpy(zero_copy_only=False) == validation.QUARANTINE
    )
    if rejected.any():
        shown = table.filter(pa.array(rejected)).slice(0, SHOWN_REJECTS).to_pylist()
        examples = [
            f"{row['_q_entity_id']!r}: "
            + ", ".join(
                f"{r['code']}({r['column']})" if r["column"] else r["code"]
                for r in row["_q_reasons"]
            )
            for row in shown
        ]
        raise TrainingDataError(
            f"the training data breaks contract {labelled.ref} (with label "
            f"{labelled.features[-1].name!r}): {int(rejected.sum())} of {len(rejected)} rows "
            f"rejected, e.g. {'; '.join(examples)}. Fix or drop those rows and train again"
        )
    if table.num_rows == 0:
        raise TrainingDataError("the training data has no rows")
    return table.select(wanted), source
