"""Predictions by entity id, from the version a model's alias (champion by default) names."""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader
from lookup_api.api.errors import ApiError
from lookup_api.api.responses import json_response

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])
BATCH_GET_PATH = router.prefix + ":batchGet"
MAX_ID_LENGTH = 256
BATCH_LIMIT = 1000
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Prediction(BaseModel):
    entity_id: str
    model: str
    version: int
    score: float
    label: str | None
    scored_at: datetime.datetime
    run_id: str


class BatchGet(BaseModel):
    ids: list[str] = Field(description=f"Entity ids, at most {BATCH_LIMIT}.")


class BatchResult(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]
    missing: list[str]


ModelQ = Annotated[str, Query(description="Model name.")]
AliasQ = Annotated[str, Query(description="Alias of the version to read.")]
VersionQ = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="Version number (instead of an alias).")
]


def check_id(entity_id: str) -> None:
    if not entity_id:
        raise ApiError(400, "invalid_entity_id", "an entity id cannot be empty")
    if len(entity_id) > MAX_ID_LENGTH:
        raise ApiError(
            400, "invalid_entity_id", f"an entity id is at most {MAX_ID_LENGTH} characters"
        )
    if CONTROL.search(entity_id):
        raise ApiError(
            400, "invalid_entity_id", f"entity id {entity_id!r} contains control characters"
        )


@router.get("/{entity_id}", response_model=Prediction)
async def get_prediction(
    entity_id: str,
    request: Request,
    db: DbDep,
    caller: Reader,
    model: ModelQ,
    alias: AliasQ = "champion",
    version: VersionQ = None,
) -> Response:
    """One entity's prediction."""
    check_id(entity_id)
    number, found = await crud.lookup(db, model, alias, version, [entity_id])
    _record(request, model, number, hits=len(found), asked=1)
    if not found:
        raise ApiError(404, "not_scored", f"no prediction for {entity_id!r} from {model} v{number}")
    return json_response(found[0])


@router.post(":batchGet", response_model=BatchResult)
async def batch_get(
    request: Request,
    db: DbDep,
    caller: Reader,
    model: ModelQ,
    body: Annotated[BatchGet, Body()],
    alias: AliasQ = "champion",
    version: VersionQ = None,
) -> Response:
    """Up to 1,000 entities' predictions in one query, and the ids that have none."""
    if len(body.ids) > BATCH_LIMIT:
        raise ApiError(
            400, "batch_too_large", f"{len(body.ids)} ids asked for; the limit is {BATCH_LIMIT}"
        )
    for entity_id in body.ids:
        check_id(entity_id)
    ids = list(dict.fromkeys(body.ids))
    number, found = await crud.lookup(db, model, alias, version, ids)
    _record(request, model, number, hits=len(found), asked=len(ids))
    present = {p["entity_id"] for p in found}
    return json_response(
        {
            "model": model,
            "version": number,
            "predictions": found,
            "missing": [i for i in ids if i not in present],
        }
    )


def _record(request: Request, model: str, version: int, *, hits: int, asked: int) -> None:
    request.state.log |= {"model": model, "version": version, "hits": hits, "misses": asked - hits}
    lookups = request.app.state.metrics.lookups
    lookups.labels(model, "hit").inc(hits)
    lookups.labels(model, "miss").inc(asked - hits)
