"""Scoring runs: state, counts per stage, drift; and each run's HTML report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from lookup_api import crud
from lookup_api.api.deps import BrowserReader, DbDep, Reader
from lookup_api.api.errors import ApiError, json_errors, responses
from lookup_api.api.schemas import Run, RunIdPath
from precompute.names import RUN_REPORT_PATH

router = APIRouter(prefix="/v1/runs", tags=["runs"])
# The report is a page of its own, stored whole when the run was checked: it may load nothing
# (no script, no style or image from elsewhere; its images are data: URLs, its styles inline),
# nor be framed by another site.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # A report is read with a key: not kept in a shared or a browser's disk cache.
    "Cache-Control": "no-store",
}


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


@router.get(
    RUN_REPORT_PATH.removeprefix(router.prefix),
    response_class=HTMLResponse,
    responses={
        200: {"description": "The report: one HTML page, no script, images inline."},
        **json_errors(
            responses(
                400,
                401,
                403,
                404,
                503,
                s401="No API key, or one that is malformed, unknown or revoked; the challenge "
                "(`Basic`) makes a browser ask for the key as the password.",
                s404="No report for this run (`unknown_report`): no such run, or it has not "
                "been checked yet.",
            )
        ),
    },
)
async def get_run_report(run_id: RunIdPath, db: DbDep, caller: BrowserReader) -> HTMLResponse:
    """A run's report for people: its row funnel, scores against the training reference,
    stage timings and, for a rescore, the comparison with the champion. Takes the key as a
    Bearer token or as HTTP Basic's password (any user name), so a browser can open it."""
    html = await crud.run_report(db, run_id)
    if html is None:
        raise ApiError(
            404,
            "unknown_report",
            f"no report for run {run_id!r}: the run is unknown or has not been checked yet",
        )
    return HTMLResponse(html, headers=REPORT_HEADERS)
