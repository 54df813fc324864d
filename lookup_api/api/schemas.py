"""What the API accepts and answers, with its limits: the OpenAPI document is generated from here.

A limit stated here is both documented and enforced (pydantic checks it before a route runs), so
the document cannot promise what the API does not keep.
"""

from __future__ import annotations

import datetime
import math
import uuid
from typing import Annotated, Any

from fastapi import Header, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from precompute.names import NAME_PATTERN
from precompute.rules import CONTROL_CHARACTERS, ID_MAX_LENGTH

MAX_ID_LENGTH = ID_MAX_LENGTH
BATCH_LIMIT = 1000
# No control characters (C0 and DEL): written for JSON Schema, Python and pydantic's engine.
NO_CONTROL_CHARACTERS = "^[^" + CONTROL_CHARACTERS.removeprefix("[")[:-1] + "]*$"
MAX_VERSION = 2**31 - 1  # PostgreSQL's integer
# The registry's rule for model and alias names: any other name cannot exist, and saying so
# beats a lookup.
NAME = NAME_PATTERN
MAX_RUN_ID_LENGTH = 250  # precompute.runs.run_id's CHECK

EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_CONTROL_CHARACTERS),
]
Name = Annotated[str, StringConstraints(pattern=NAME)]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: not_scored, invalid_key, ...")
    message: str = Field(description="What was wrong and what to do, for a person.")


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


# Parameters -------------------------------------------------------------------------------------

EntityIdPath = Annotated[
    EntityId,
    Path(
        description="The entity's key: 1 to 256 characters, no control characters.",
        examples=["c42"],
    ),
]
ModelQ = Annotated[Name, Query(description="Model name.", examples=["churn"])]
ModelPath = Annotated[Name, Path(description="Model name.", examples=["churn"])]
AliasQ = Annotated[Name, Query(description="Alias of the version to read.")]
RunIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_RUN_ID_LENGTH,
        pattern=NO_CONTROL_CHARACTERS,
        description="Run id (the Airflow run id when Airflow started it).",
    ),
]
VersionQ = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="Version number (instead of an alias)."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Optional, unique per API key: sending the same request again with the same "
        "key returns the request made the first time (202, same id) instead of a second one; "
        "a different request under a key already used is refused (409).",
    ),
]


# Predictions ------------------------------------------------------------------------------------


class Prediction(BaseModel):
    entity_id: str
    model: str
    version: int
    score: float = Field(
        description="A regressor's prediction; a binary classifier's probability of the positive "
        "class; a multiclass classifier's probability of the predicted class (`label`)."
    )
    label: str | None = Field(description="The predicted class; null for a regressor.")
    scored_at: datetime.datetime
    run_id: str
    probabilities: dict[str, float] | None = Field(
        description="A multiclass classifier's probability of every class, by class; null for "
        "binary classifiers and regressors.",
        json_schema_extra={"examples": [{"basic": 0.2, "plus": 0.7, "premium": 0.1}]},
    )


class BatchGet(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ids": ["c42", "c43"]}]})

    ids: list[EntityId] = Field(
        max_length=BATCH_LIMIT, description=f"Entity ids, at most {BATCH_LIMIT:,}."
    )


class BatchResult(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]
    missing: list[str] = Field(description="The ids asked for that have no prediction.")


# Models and runs --------------------------------------------------------------------------------


class ModelSummary(BaseModel):
    name: str
    task: str
    description: str
    aliases: dict[str, int] = Field(description="Alias name to version number.")
    versions: int = Field(description="Registered versions.")


class ModelVersion(BaseModel):
    version: int
    kind: str
    metrics: dict[str, Any] = Field(description="Validation metrics from training.")
    registered_at: datetime.datetime
    aliases: list[str]
    served_predictions: int | None = Field(description="Null when none were published.")
    published_at: datetime.datetime | None


class ModelDetail(BaseModel):
    name: str
    task: str
    description: str
    versions: list[ModelVersion]


class RunStage(BaseModel):
    stage: str
    state: str
    attempt: int
    rows_in: int | None
    rows_out: int | None
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    error: str | None


class Run(BaseModel):
    run_id: str
    mode: str
    batch_id: str | None
    model: str | None
    version: int | None
    state: str
    rows_read: int | None
    rows_accepted: int | None
    rows_quarantined: int | None
    rows_scored: int | None
    rows_published: int | None
    rejected_share: float | None
    psi: float | None
    error: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    stages: list[RunStage]


# Score requests ---------------------------------------------------------------------------------

# Integers are exact within +-(2**53 - 1), the range JSON parsers agree on (RFC 7493).
MAX_EXACT_INTEGER = 2**53 - 1


def _unicode(text: str) -> str:
    """Refuses a string JSON can carry but UTF-8 cannot: one with a lone surrogate ("\\ud800").

    pydantic refuses those in string fields but not in dictionary keys, nor in values it does not
    type as strings (feature values), and they fail later, when the text is encoded.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "string_unicode", "a string must be valid Unicode (it has a lone surrogate)"
        ) from None
    return text


def _feature_value(value: object) -> bool | int | float | str | None:
    """A value a contract's feature can take, in a range PostgreSQL and the scoring job hold.

    A number out of range is refused here rather than failing inside the contract check or a
    scoring run (a 400-digit integer cannot even be compared with a double).
    """
    if isinstance(value, str):
        return _unicode(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) <= MAX_EXACT_INTEGER:
            return value
        raise PydanticCustomError(
            "number_out_of_range",
            f"an integer must be within +-{MAX_EXACT_INTEGER}; write larger numbers as decimals",
        )
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise PydanticCustomError("number_out_of_range", "a number must be finite")
    raise PydanticCustomError(
        "feature_type", "a feature value is a boolean, a number, a string or null"
    )


FeatureName = Annotated[str, AfterValidator(_unicode)]
FeatureValue = Annotated[
    Any,
    PlainValidator(_feature_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "minimum": -MAX_EXACT_INTEGER, "maximum": MAX_EXACT_INTEGER},
                {"type": "number"},
                {"type": "string"},
                {"type": "null"},
            ]
        }
    ),
]


class ScoreRequestIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "churn",
                    "entity_id": "c9001",
                    "features": {
                        "age": 41,
                        "tenure_months": 12,
                        "monthly_spend": 55.5,
                        "support_calls": 2,
                        "discount_rate": None,
                        "plan": "plus",
                        "region": "west",
                        "autopay": True,
                    },
                }
            ]
        }
    )

    model: Name = Field(description="Model name; the next run of its champion answers.")
    entity_id: EntityId
    features: dict[FeatureName, FeatureValue] = Field(
        description="Feature values, as the champion version's input contract says."
    )
    callback_url: HttpUrl | None = Field(None, description="Gets the result as a POST when done.")


class Accepted(BaseModel):
    request_id: uuid.UUID
    state: str


class ScoreRequestOut(BaseModel):
    request_id: uuid.UUID
    model: str
    entity_id: str
    state: str = Field(description="pending, scoring, done or failed.")
    version: int | None
    score: float | None
    label: str | None
    error: str | None
    run_id: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
