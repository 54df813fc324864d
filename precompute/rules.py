"""The rules a row must meet, described once from its contract and run in two places: as Spark
expressions by ingest (`jobs.validation`) and in Python for records that arrive one at a time
(a score request to the lookup API, `check_record`). Both read the same `Rule` list, the same
text forms and the same limits, so they cannot disagree; a test runs one corpus of values
through both and compares the verdicts.

A value arrives either as text (CSV fields, JSON lines read as text, JSON values of a score
request written the way a JSON reader hands them over) or already typed (a Parquet column
whose physical type fits the contract). Text must have the type's form exactly
(`TEXT_FORMS`): no locale formats, no "yes" for true, no NaN or infinities, no date-like
strings that only one parser accepts; then it must convert (a day that exists, a long within
64 bits). Reason codes, as the quarantine records them:

- `type_error`: not of the column's form or type;
- `null_required`: no value where the contract needs one (a blank entity id counts);
- `invalid_id`: an entity id with control characters, or longer than lookups accept;
- `out_of_range`: below `min`, above `max`, or longer than `max_length`;
- `unknown_category`: a string outside the column's `allowed` values.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from precompute.contracts import Column, Contract

# Entity ids are looked up by the API: the same limits hold wherever an id comes from.
ID_MAX_LENGTH = 256
# A regex class (escaped, so Java's and Python's regex engines read it alike); NUL cannot reach
# PostgreSQL, and the lookup API refuses all of them.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# The exact text forms accepted per type (case-insensitive for booleans).
TEXT_FORMS = {
    "long": r"^[+-]?[0-9]+$",
    "double": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
    "boolean": r"^(?i:true|false)$",
    # Year 0 exists for Spark and not for Python: both refuse it here.
    "date": r"^(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamp": (
        r"^(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?"
        r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
    ),
}

# Instants both runtimes hold (Python's datetime stops at year 9999); in UTC.
TIMESTAMP_RANGE = ("0001-01-01 00:00:00", "9999-12-31 23:59:59.999999")

Check = Literal[
    "type",
    "required",
    "not_blank",
    "no_control",
    "id_length",
    "max_length",
    "min",
    "max",
    "allowed",
]
CODES: dict[Check, str] = {
    "type": "type_error",
    "required": "null_required",
    "not_blank": "null_required",
    "no_control": "invalid_id",
    "id_length": "invalid_id",
    "max_length": "out_of_range",
    "min": "out_of_range",
    "max": "out_of_range",
    "allowed": "unknown_category",
}


@dataclass(frozen=True)
class Rule:
    """One check of one column; `limit` is the bound, length or allowed values it compares to."""

    column: Column
    check: Check
    limit: Any = None

    @property
    def code(self) -> str:
        return CODES[self.check]


def row_rules(contract: Contract) -> list[Rule]:
    """Every rule of the contract's columns, in the order reasons are reported."""
    rules = []
    for column in contract.columns:
        is_id = column is contract.entity_id
        rules.append(Rule(column, "type"))
        if not column.nullable:
            rules.append(Rule(column, "required"))
        if is_id and column.type == "string":
            rules += [
                Rule(column, "not_blank"),
                Rule(column, "no_control"),
                Rule(column, "id_length", ID_MAX_LENGTH),
            ]
        if column.max_length is not None:
            rules.append(Rule(column, "max_length", column.max_length))
        if column.min is not None:
            rules.append(Rule(column, "min", column.min))
        if column.max is not None:
            rules.append(Rule(column, "max", column.max))
        if column.allowed is not None:
            rules.append(Rule(column, "allowed", column.allowed))
    return rules


def servable(entity_id: Any) -> Any:
    """A Spark condition: the id can be stored and looked up (publish leaves others out)."""
    # pyspark is heavy, and the lookup API runs these rules on score requests without it.
    from pyspark.sql import functions as F

    return ~entity_id.rlike(CONTROL_CHARACTERS) & (F.length(entity_id) <= ID_MAX_LENGTH)


# ---- Python: one record at a time -----------------------------------------------------------


def check_record(
    contract: Contract, values: dict[str, Any], columns: tuple[Column, ...] | None = None
) -> list[tuple[str, str]]:
    """What is wrong with one record given as JSON values, as (code, column) pairs in rule
    order (empty: nothing), checking `columns` (default: all of the contract's). Names not among
    them are ("unknown_column", name)."""
    return typed_record(contract, values, columns)[1]


def typed_record(
    contract: Contract, values: dict[str, Any], columns: tuple[Column, ...] | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The record's values in their columns' types (what ingest stores), and its problems as
    `check_record` reports them."""
    checked = {c.name for c in (columns if columns is not None else contract.columns)}
    problems = [("unknown_column", name) for name in values if name not in checked]
    typed: dict[str, Any] = {}
    failed: set[str] = set()
    for rule in row_rules(contract):
        name = rule.column.name
        if name in failed or name not in checked:
            continue  # a value that is not of its type meets no other rule
        if rule.check == "type":
            ok, typed[name] = _typed(rule.column, values.get(name))
            if not ok:
                failed.add(name)
                problems.append((rule.code, name))
        elif not _meets(rule, typed.get(name)):
            problems.append((rule.code, name))
    return typed, problems


def as_text(value: Any) -> str | None:
    """A JSON value as the text a JSON reader hands over for it (what ingest reads a JSON line's
    field as): strings as they are, numbers as written, booleans lowercase."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return repr(value) if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")
    # An object or a list, as compact JSON (what a JSON reader hands over for it as text).
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _typed(column: Column, value: Any) -> tuple[bool, Any]:
    """(is of the type, the typed value) for a JSON value."""
    text = as_text(value)
    if text is None:
        return True, None
    if column.type == "string":
        return True, text
    if not re.fullmatch(TEXT_FORMS[column.type], text):
        return False, None
    try:
        if column.type == "long":
            number = int(text)
            return LONG_MIN <= number <= LONG_MAX, number
        if column.type == "double":
            real = float(text)
            return math.isfinite(real), real
        if column.type == "boolean":
            return True, text.lower() == "true"
        if column.type == "date":
            return True, datetime.date.fromisoformat(text)
        return True, _timestamp(text)
    except ValueError:
        return False, None


def _timestamp(text: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=datetime.UTC)  # as Spark reads it: the session is UTC
    try:
        return parsed.astimezone(datetime.UTC)
    except OverflowError:  # past year 9999 in UTC: outside TIMESTAMP_RANGE
        raise ValueError(text) from None


def _meets(rule: Rule, value: Any) -> bool:
    if rule.check == "required":
        return value is not None
    if value is None:
        return True  # only "required" speaks about missing values
    if rule.check == "not_blank":
        return bool(str(value).strip(" "))  # spaces only, as Spark's trim
    if rule.check == "no_control":
        return re.search(CONTROL_CHARACTERS, str(value)) is None
    if rule.check in ("id_length", "max_length"):
        return len(str(value)) <= int(rule.limit)
    if rule.check == "min":
        return bool(value >= rule.limit)
    if rule.check == "max":
        return bool(value <= rule.limit)
    return value in rule.limit  # allowed


def request_columns(contract: Contract) -> tuple[Column, ...]:
    """What a score request carries: the entity id and the features (no event time)."""
    return (contract.entity_id, *contract.features)


def explain(contract: Contract, problems: list[tuple[str, str]]) -> str:
    """The problems as one line a caller can act on: what each column needs."""
    columns = {c.name: c for c in contract.columns}
    parts = []
    for code, name in problems:
        column = columns.get(name)
        if column is None or code == "unknown_column":
            parts.append(f"{name}: not a feature of {contract.ref}")
            continue
        needs = {
            "type_error": f"must be a {column.type}"
            + ("" if column.type == "string" else f" written as {_FORMS[column.type]}"),
            "null_required": "a value is required",
            "invalid_id": f"must be at most {ID_MAX_LENGTH} characters without control characters",
            "out_of_range": "must be "
            + " and ".join(
                bound
                for bound in (
                    f"at least {column.min:g}" if column.min is not None else "",
                    f"at most {column.max:g}" if column.max is not None else "",
                    f"at most {column.max_length} characters" if column.max_length else "",
                )
                if bound
            ),
            "unknown_category": f"must be one of {', '.join(column.allowed or ())}",
        }[code]
        parts.append(f"{name}: {needs}")
    return "; ".join(parts)


_FORMS = {
    "long": "a whole number within 64 bits",
    "double": "a finite decimal number",
    "boolean": "true or false",
    "date": "YYYY-MM-DD",
    "timestamp": "ISO 8601 (YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|+HH:MM])",
}
