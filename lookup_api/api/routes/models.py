"""Registered models, their versions and aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(db: DbDep, caller: Reader) -> list[dict[str, Any]]:
    """Every model with its task, version count and aliases."""
    return await crud.models(db)


@router.get("/{name}")
async def get_model(name: str, db: DbDep, caller: Reader) -> dict[str, Any]:
    """One model's versions: kind, metrics, aliases, served predictions."""
    return await crud.model(db, name)
