"""Registered models, their versions and aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader
from lookup_api.api.errors import responses, unknown_model
from lookup_api.api.schemas import ModelDetail, ModelPath, ModelSummary

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[ModelSummary], responses=responses(401, 403, 503))
async def list_models(db: DbDep, caller: Reader) -> list[dict[str, Any]]:
    """Every model with its task, version count and aliases."""
    return await crud.models(db)


@router.get(
    "/{name}",
    response_model=ModelDetail,
    responses=responses(400, 401, 403, 404, 503, s404="No such model (`unknown_model`)."),
)
async def get_model(name: ModelPath, db: DbDep, caller: Reader) -> dict[str, Any]:
    """One model's versions: kind, metrics, aliases, served predictions."""
    found = await crud.model(db, name)
    if found is None:
        raise unknown_model(name)
    return found
