"""The lookup log's writer: each lookup's record is appended to a spool file, off the request path.

A request only appends its JSON line to an in-memory queue (a deque append: no lock, no I/O).
A thread of its own writes what is queued every `flush_seconds`, in one write, to this
process's open spool file, and closes that file every `rotate_seconds` so the shipper can take
it (the layout is `precompute.lookup_log`). Closing the API (its lifespan's end, on SIGTERM)
writes the rest and closes the file. A process killed outright loses what it had not written:
at most `flush_seconds` of records; what it wrote is in the OS's cache and survives it.
"""

from __future__ import annotations

import collections
import fcntl
import itertools
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import BinaryIO

from precompute import lookup_log

LOG = logging.getLogger("lookup_api.spool")


class Spool:
    """This process's lookup records on their way to the spool folder."""

    def __init__(self, folder: Path, flush_seconds: float, rotate_seconds: float) -> None:
        self.folder = folder
        self.flush_seconds = flush_seconds
        self.rotate_seconds = rotate_seconds
        # Unique across processes and restarts without a shared counter: the PID for a reader,
        # random bits so a reused PID never repeats an id.
        self.writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)
        self._queued: collections.deque[str] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lookup-spool", daemon=True)
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._files = 0

    def request_id(self) -> str:
        """A new request id, unique across the API's processes and their restarts."""
        return f"{self.writer}-{next(self._ids)}"

    def put(self, line: str) -> None:
        """Queue one record (a JSON object on one line); the writer thread writes it."""
        self._queued.append(line)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Files of a process that was killed are finished now: the shipper may take them.
        lookup_log.close_abandoned(self.folder)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued and close the file: nothing is left behind."""
        self._stop.set()
        self._thread.join()
        self._write_queued()
        self._close_file()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self._write_queued()
                if (
                    self._file is not None
                    and time.monotonic() - self._opened >= self.rotate_seconds
                ):
                    self._close_file()
            except OSError as exc:  # a full or gone disk must not stop the thread
                LOG.error("lookup log: cannot write %s: %s", self._path or self.folder, exc)

    def _write_queued(self) -> None:
        # Only what is queued now: requests keep appending while this runs.
        lines = [self._queued.popleft() for _ in range(len(self._queued))]
        if not lines:
            return
        encoded = ("\n".join(lines) + "\n").encode()
        data = memoryview(encoded)
        try:
            if self._file is None:
                self._open_file()
            assert self._file is not None
            while data:  # an unbuffered write may write part: the rest follows, whole lines
                data = data[self._file.write(data) or 0 :]
        except OSError:
            if len(data) == len(encoded):  # nothing written: keep them all for the next try
                self._queued.extendleft(reversed(lines))
            raise

    def _open_file(self) -> None:
        self._files += 1
        stem = self.folder / lookup_log.file_stem(self.writer, self._files)
        new = stem.with_suffix(lookup_log.NEW)
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        # Locked before it is named .open: another process never sees it .open and unlocked.
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._path = stem.with_suffix(lookup_log.OPEN)
        new.rename(self._path)
        self._file = os.fdopen(fd, "ab", buffering=0)  # each write is one system call
        self._opened = time.monotonic()

    def _close_file(self) -> None:
        if self._file is None or self._path is None:
            return
        # Renamed while still locked: nobody else can take it for abandoned in between.
        self._path.rename(self._path.with_suffix(lookup_log.CLOSED))
        self._file.close()
        self._file = None
