"""Scoring runs: state, counts per stage, drift."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader
from lookup_api.api.errors import ApiError, responses
from lookup_api.api.schemas import Run, RunIdPath

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.get(
    "/{run_id}",
    response_model=Run,
    responses=responses(400, 401, 403, 404, 503, s404="No such run (`unknown_run`)."),
)
async def get_run(run_id: RunIdPath, db: DbDep, caller: Reader) -> dict[str, Any]:
    """One run with its stages."""
    run = await crud.run(db, run_id)
    if run is None:
        raise ApiError(404, "unknown_run", f"no run {run_id!r}")
    return run
