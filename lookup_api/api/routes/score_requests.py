"""Asynchronous score requests: features of an entity never scored, answered by the next run."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, HttpUrl

from lookup_api import crud
from lookup_api.api.deps import Caller, DbDep, require
from lookup_api.api.routes.predictions import check_id
from lookup_api.core import keys

router = APIRouter(prefix="/v1/score-requests", tags=["score requests"])
Submitter = Annotated[Caller, Depends(require(keys.SUBMIT))]
Anyone = Annotated[Caller, Depends(require(keys.READ, keys.SUBMIT))]


class ScoreRequestIn(BaseModel):
    model: str = Field(description="Model name; the next run of its champion answers.")
    entity_id: str
    features: dict[str, Any] = Field(description="Feature values, as the model's contract says.")
    callback_url: HttpUrl | None = Field(None, description="Gets the result as a POST when done.")


class Accepted(BaseModel):
    request_id: uuid.UUID
    state: str


class ScoreRequestOut(BaseModel):
    request_id: uuid.UUID
    model: str
    entity_id: str
    state: str
    version: int | None
    score: float | None
    label: str | None
    error: str | None
    run_id: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


@router.post("", status_code=202, response_model=Accepted)
async def submit(body: ScoreRequestIn, request: Request, caller: Submitter) -> dict[str, object]:
    """Queue an entity for the next scoring run of the model's champion."""
    check_id(body.entity_id)
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


@router.get("/{request_id}", response_model=ScoreRequestOut)
async def status(request_id: uuid.UUID, db: DbDep, caller: Anyone) -> dict[str, object]:
    """A request's state: pending, scoring, done (with the prediction) or failed (with why)."""
    return await crud.score_request(db, request_id)
