"""Incoming batch files: find them, tell their format, check their header against the contract,
and name the file a read failed on, before anything is written anywhere."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pyarrow.fs as pafs

from precompute.contracts import Contract
from precompute.errors import PrecomputeError

Format = Literal["csv", "json", "parquet"]
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json.gz": "json",
    ".jsonl.gz": "json",
    ".parquet": "parquet",
}
UTF8 = "utf-8"


class InputError(PrecomputeError):
    """The batch cannot be ingested as given: nothing was written."""


def batch_files(path: str) -> list[str]:
    """The data files of a batch: one file, or every visible file under a folder."""
    if "://" not in path:
        path = os.path.abspath(path)
    fs, root = pafs.FileSystem.from_uri(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input {path} does not exist")
    if info.type == pafs.FileType.File:
        return [root]
    listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        i.path
        for i in listing
        if i.type == pafs.FileType.File
        and not any(part.startswith(("_", ".")) for part in i.path[len(root) :].split("/"))
    )
    if not files:
        raise InputError(f"input folder {path} holds no data files")
    return files


def detect_format(files: list[str]) -> Format:
    """The one format all files share, from their extensions."""
    found: dict[Format, list[str]] = {}
    unknown = []
    for name in files:
        fmt = next((f for ext, f in EXTENSIONS.items() if name.lower().endswith(ext)), None)
        if fmt is None:
            unknown.append(name)
        else:
            found.setdefault(fmt, []).append(name)
    if unknown:
        raise InputError(
            f"cannot tell the format of {', '.join(unknown[:5])}: expected extensions "
            f"{', '.join(EXTENSIONS)} (or pass --format)"
        )
    if len(found) > 1:
        raise InputError(f"a batch must have one format; found {', '.join(sorted(found))}")
    return next(iter(found))


def check_columns(contract: Contract, present: set[str], where: str) -> None:
    missing = [c.name for c in contract.columns if c.name not in present]
    if missing:
        raise InputError(
            f"{where} is missing required columns {', '.join(missing)} (contract {contract.ref})"
        )


def head_lines(path: str, count: int, encoding: str = UTF8) -> list[str]:
    """Up to `count` lines from the start of a file (decompressed), to check its header."""
    fs, root = pafs.FileSystem.from_uri(path)
    # utf-8-sig drops the byte-order mark spreadsheet programs write at the start.
    codec = "utf-8-sig" if encoding == UTF8 else encoding
    try:
        with fs.open_input_stream(root, compression="detect") as stream:
            text = io.TextIOWrapper(stream, encoding=codec, errors="replace", newline="")
            lines = []
            for line in text:
                lines.append(line)
                if len(lines) >= count:
                    break
            return lines
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


@contextmanager
def read_errors(files: list[str]) -> Iterator[None]:
    """Turn a failure Spark meets while reading one of `files` (a truncated gzip, a line too
    long for memory, a file that vanished) into one line naming the file and the cause, instead
    of a Java stack trace. Failures that name none of the files pass through unchanged."""
    try:
        yield
    except Exception as exc:  # Py4JJavaError and PySparkException share no narrower base
        text = str(exc)
        named = next((f for f in files if _uri(f) in text or f in text), None)
        if named is None:
            raise
        raise InputError(f"cannot read {named}: {_root_cause(exc)}") from None


def _uri(path: str) -> str:
    return path if "://" in path else f"file://{path}"


def _root_cause(exc: Exception) -> str:
    """The innermost Java exception's class and message: what actually went wrong."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        while java.getCause() is not None:
            java = java.getCause()
        name = str(java.getClass().getSimpleName())
        message = java.getMessage()
        return f"{name}: {message}" if message else name
    causes = [line for line in str(exc).splitlines() if line.startswith("Caused by: ")]
    last = causes[-1].removeprefix("Caused by: ") if causes else str(exc).strip().splitlines()[0]
    return last.split(": ", 1)[-1] if ": " in last else last
