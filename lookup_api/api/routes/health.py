"""Liveness and readiness: open, for load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from lookup_api.api.deps import DbDep
from lookup_api.api.errors import responses

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=responses(503))
async def readyz(db: DbDep) -> dict[str, str]:
    """The database answers (503 with Retry-After when it does not)."""
    await db.query("SELECT 1")
    return {"status": "ready"}
