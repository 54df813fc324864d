"""Scoring runs: state, counts per stage, drift."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.get("/{run_id}")
async def get_run(run_id: str, db: DbDep, caller: Reader) -> dict[str, Any]:
    """One run with its stages."""
    return await crud.run(db, run_id)
