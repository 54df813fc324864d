"""Landing a batch as the landing contract asks a producer to (`jobs/landing.py`): written
under a hidden name, then renamed into place whole."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def land_batch(folder: Path, tables: list[pa.Table]) -> float:
    """Write `tables` as Parquet files of the batch `folder` and land it; the time (epoch
    seconds) at which it appeared."""
    import pyarrow.parquet as pq  # a second to import: only when a batch is written

    partial = folder.with_name(f".{folder.name}.partial")  # the watcher ignores dot-folders
    partial.mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(tables):
        pq.write_table(table, partial / f"part-{i}.parquet")
    partial.rename(folder)  # atomic on one file system: the batch appears whole
    return time.time()
