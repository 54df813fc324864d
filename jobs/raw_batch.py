"""A batch as read, before validation: the contract's columns as they came, and the reserved
columns the readers add (the source file, a line no reader could parse, the row's raw text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CORRUPT = "_corrupt_record"
RAW = "_raw_line"
SOURCE_FILE = "_source_file"
ENCODING_ERROR = "_encoding_error"


@dataclass(frozen=True)
class RawBatch:
    """The batch as read: contract columns as they came (strings for text formats)."""

    df: DataFrame
    corrupt_column: str | None  # where a text reader puts lines it could not parse
    raw_column: str | None = None  # the row as it came, where the reader keeps it
    encoding_column: str | None = None  # true where the row's bytes are not valid text
