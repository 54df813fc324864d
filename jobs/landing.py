"""The landing contract: which folders under the landing root are batches ready to ingest.

A batch is a folder directly under the landing root. It is ready when it is complete, which a
producer shows in one of two ways:

- it writes the folder under a name starting with `.` or `_` and renames it into place when
  every file is written (a rename is atomic on one file system): the folder appears whole;
- or it writes the folder in place and, last, an empty `_SUCCESS` file in it (what Spark and
  Hadoop writers leave). With `PRECOMPUTE_LANDING_REQUIRE_MARKER=true`, only folders holding
  that file are ready; use it when producers cannot rename.

Batches are taken in landing order: the folder's modification time, then its name. Cheap to
import: the scheduler's trigger and the DAG files read it.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "_SUCCESS"


def ready_folders(root: Path, require_marker: bool) -> list[Path]:
    """The batch folders under `root` that are complete, oldest first."""
    if not root.is_dir():
        return []
    folders = []
    for entry in root.iterdir():
        if entry.name.startswith((".", "_")) or not entry.is_dir():
            continue  # still being written, or not a batch
        if require_marker and not (entry / MARKER).is_file():
            continue
        try:
            folders.append((entry.stat().st_mtime, entry.name, entry))
        except FileNotFoundError:
            continue  # moved away between the listing and now
    return [path for _, _, path in sorted(folders)]
