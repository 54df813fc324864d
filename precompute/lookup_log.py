"""The lookup log's spool: the folder of JSON-line files the lookup API writes and the shipper
(`jobs/lookup_log.py`) moves into the lake.

One truth for both sides: the file names, which files are finished, the record's fields.

A file's life: `<writer>-<n>.new` (made and locked by the writer, empty), `<writer>-<n>.open`
(being written: its writer holds an exclusive `flock` on it as long as it lives), then
`<writer>-<n>.jsonl` (closed: whole, never written again; the shipper's to ship and delete).
A writer that died without closing its file leaves it `.open` with no lock held: whoever
finds it so (a new API process, the shipper) closes it for it. The lock, not a process id,
says who is alive, so a reused PID cannot make a dead writer's file look live.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

NEW = ".new"
OPEN = ".open"
CLOSED = ".jsonl"

# A record is one JSON object per line with these keys (absent ones are null): the request's
# unique id, its end as Unix seconds, the route template, method, status, latency, the API
# key's name, and for lookups the model, its version and the ids found and not found.
FIELDS = (
    "request_id",
    "ts",
    "route",
    "method",
    "status",
    "latency_ms",
    "key",
    "model",
    "version",
    "hits",
    "misses",
    "detail",
)


def file_stem(writer: str, number: int) -> str:
    """The name, without its state's suffix, of a writer's `number`th spool file."""
    return f"{writer}-{number:06d}"


def close_abandoned(folder: Path) -> int:
    """Close the files of writers that died while writing them; how many were closed.

    A file is abandoned when nobody holds its lock: a live writer always does. Safe against
    live writers closing their own file at the same moment (whoever renames first wins)."""
    closed = 0
    for path in sorted(folder.glob(f"*{OPEN}")) + sorted(folder.glob(f"*{NEW}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its writer closed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            with contextlib.suppress(FileNotFoundError):
                if path.suffix == NEW or os.fstat(fd).st_size == 0:
                    path.unlink()  # never written to: nothing to ship
                else:
                    path.rename(path.with_suffix(CLOSED))
                    closed += 1
        finally:
            os.close(fd)
    return closed


def closed_files(folder: Path) -> list[Path]:
    """The finished spool files, abandoned ones included, each writer's in the order written."""
    if not folder.is_dir():
        return []
    close_abandoned(folder)
    return sorted(folder.glob(f"*{CLOSED}"))
