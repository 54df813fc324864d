"""Asynchronous score requests: features of an entity never scored, answered by the next run."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from lookup_api import submissions
from lookup_api.api.deps import Anyone, DbDep, Submitter, WriterDep
from lookup_api.api.errors import ApiError, responses
from lookup_api.api.schemas import Accepted, IdempotencyKey, ScoreRequestIn, ScoreRequestOut
from precompute import callback_targets

router = APIRouter(prefix="/v1/score-requests", tags=["score requests"])


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
        s400="Invalid body, entity id, callback URL (`invalid_callback_url`: not a public "
        "address) or Idempotency-Key, or features that do not fit the "
        "model's input contract (`invalid_features`, naming each field).",
        s404="No such model (`unknown_model`).",
        s409="The model has no champion version (`no_champion`), or the Idempotency-Key was "
        "used for a different request (`idempotency_key_reused`).",
        s429="This API key has too many requests waiting to be scored (`too_many_pending`).",
    ),
)
async def submit(
    body: ScoreRequestIn,
    request: Request,
    writer: WriterDep,
    caller: Submitter,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Queue an entity for the next scoring run of the model's champion."""
    request.state.log |= {"model": body.model}
    if body.callback_url is not None:
        allowed = request.app.state.callback_allowed
        refused = await callback_targets.refusal(str(body.callback_url), allowed)
        if refused:
            raise ApiError(400, "invalid_callback_url", refused)
    request_id, state = await submissions.submit(
        writer,
        request.app.state.contracts,
        caller.key_id,
        request.app.state.max_pending_requests,
        body,
        idempotency_key,
    )
    return {"request_id": request_id, "state": state}


@router.get(
    "/{request_id}",
    response_model=ScoreRequestOut,
    responses=responses(
        400, 401, 403, 404, 503, s404="No score request with this id made by this API key."
    ),
)
async def status(request_id: uuid.UUID, db: DbDep, caller: Anyone) -> dict[str, object]:
    """A request's state: pending, scoring, done (with the prediction) or failed (with why)."""
    return await submissions.score_request(db, request_id, caller.key_id)
