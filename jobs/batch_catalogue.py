"""The batch catalogue (sql/0018_feature_profiles.sql): what each ingest read, from where and
when, for the analysts' `analytics.batches` and `analytics.batch_files`."""

from __future__ import annotations

import datetime
import os

import pyarrow.fs as pafs

from precompute.database import Database


def record_batch(
    db: Database,
    *,
    dataset: str,
    contract_version: int,
    batch_id: str,
    run_id: str,
    input_path: str,
    fmt: str,
    files: list[str],
    ingested_at: datetime.datetime,
) -> None:
    """The batch and its files with their sizes; it landed when its folder (or file) was last
    modified, which is when a producer renamed it into place (see jobs/landing.py)."""
    path = input_path if "://" in input_path else os.path.abspath(input_path)
    fs, root = pafs.FileSystem.from_uri(path)
    landed = fs.get_file_info(root).mtime
    infos = fs.get_file_info(files)
    with db.transaction("writer") as cursor:
        cursor.execute(
            """
            INSERT INTO precompute.batches (dataset, batch_id, contract_version, input_path,
                                            format, landed_at, ingested_at, ingest_run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (dataset, batch_id) DO UPDATE
               SET contract_version = EXCLUDED.contract_version,
                   input_path = EXCLUDED.input_path, format = EXCLUDED.format,
                   landed_at = EXCLUDED.landed_at, ingested_at = EXCLUDED.ingested_at,
                   ingest_run_id = EXCLUDED.ingest_run_id
            """,
            (dataset, batch_id, contract_version, path, fmt, _utc(landed), ingested_at, run_id),
        )
        cursor.execute(
            "DELETE FROM precompute.batch_files WHERE dataset = %s AND batch_id = %s",
            (dataset, batch_id),
        )
        for info in infos:
            cursor.execute(
                """
                INSERT INTO precompute.batch_files (dataset, batch_id, path, size_bytes,
                                                    modified_at)
                VALUES (%s, %s, %s, %s, %s)
                """,
                (dataset, batch_id, info.path, info.size, _utc(info.mtime)),
            )


def _utc(moment: datetime.datetime | None) -> datetime.datetime | None:
    """pyarrow reports local file times as naive UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
