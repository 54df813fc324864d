"""Asynchronous score requests: features of an entity never scored, answered by the next run."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from lookup_api import crud
from lookup_api.api.deps import Caller, DbDep, require
from lookup_api.api.errors import responses
from lookup_api.api.schemas import Accepted, ScoreRequestIn, ScoreRequestOut
from lookup_api.core import keys

router = APIRouter(prefix="/v1/score-requests", tags=["score requests"])
Submitter = Annotated[Caller, Depends(require(keys.SUBMIT))]
Anyone = Annotated[Caller, Depends(require(keys.READ, keys.SUBMIT))]


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    responses=responses(
        400,
        401,
        403,
        404,
        409,
        413,
        429,
        503,
        s400="Invalid body or entity id, or features that do not fit the model's input "
        "contract (`invalid_features`, naming each field).",
        s404="No such model (`unknown_model`).",
        s409="The model has no champion version (`no_champion`).",
        s429="This API key has too many requests waiting to be scored (`too_many_pending`).",
    ),
)
async def submit(body: ScoreRequestIn, request: Request, caller: Submitter) -> dict[str, object]:
    """Queue an entity for the next scoring run of the model's champion."""
    request.state.log |= {"model": body.model}
    request_id = await crud.submit_request(
        request.app.state.writer,
        request.app.state.contracts,
        caller.key_id,
        request.app.state.max_pending_requests,
        body.model,
        body.entity_id,
        body.features,
        str(body.callback_url) if body.callback_url else None,
    )
    return {"request_id": request_id, "state": "pending"}


@router.get(
    "/{request_id}",
    response_model=ScoreRequestOut,
    responses=responses(400, 401, 403, 404, 503, s404="No score request with this id."),
)
async def status(request_id: uuid.UUID, db: DbDep, caller: Anyone) -> dict[str, object]:
    """A request's state: pending, scoring, done (with the prediction) or failed (with why)."""
    return await crud.score_request(db, request_id)
