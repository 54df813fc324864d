"""Predictions by entity id, from the version a model's alias (champion by default) names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from lookup_api import crud
from lookup_api.api.deps import DbDep, Reader
from lookup_api.api.errors import ApiError, responses, unknown_model
from lookup_api.api.responses import json_response
from lookup_api.api.schemas import (
    AliasQ,
    BatchGet,
    BatchResult,
    EntityIdPath,
    ModelQ,
    Prediction,
    VersionQ,
)
from lookup_api.core.db import Database
from precompute.names import CHAMPION

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])
BATCH_GET_PATH = router.prefix + ":batchGet"
# The routes whose requests the lookup log keeps (route templates, as the log names them).
LOOKUP_ROUTES = frozenset({router.prefix + "/{entity_id}", BATCH_GET_PATH})
NOT_FOUND = "Unknown model, alias or version (`unknown_model`, `unknown_version`)"
NOT_SCORED = NOT_FOUND + ", or no prediction for the entity (`not_scored`)."


@router.get(
    "/{entity_id}",
    response_model=Prediction,
    responses=responses(400, 401, 403, 404, 503, s404=NOT_SCORED),
)
async def get_prediction(
    entity_id: EntityIdPath,
    request: Request,
    db: DbDep,
    caller: Reader,
    model: ModelQ,
    alias: AliasQ = CHAMPION,
    version: VersionQ = None,
) -> Response:
    """One entity's prediction."""
    number, found = await _lookup(db, model, alias, version, [entity_id])
    _record(request, model, number, hits=len(found), asked=1)
    if not found:
        raise ApiError(404, "not_scored", f"no prediction for {entity_id!r} from {model} v{number}")
    return json_response(found[0])


@router.post(
    ":batchGet",
    response_model=BatchResult,
    responses=responses(400, 401, 403, 404, 413, 503, s404=NOT_FOUND + "."),
)
async def batch_get(
    request: Request,
    db: DbDep,
    caller: Reader,
    model: ModelQ,
    body: Annotated[BatchGet, Body()],
    alias: AliasQ = CHAMPION,
    version: VersionQ = None,
) -> Response:
    """Up to 1,000 entities' predictions in one query, and the ids that have none."""
    ids = list(dict.fromkeys(body.ids))
    number, found = await _lookup(db, model, alias, version, ids)
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


async def _lookup(
    db: Database, model: str, alias: str, version: int | None, ids: list[str]
) -> tuple[int, list[dict[str, Any]]]:
    """The chosen version and what was found; 404 saying why when nothing could be chosen."""
    chosen = await crud.lookup(db, model, alias, version, ids)
    if chosen is not None:
        return chosen
    # Only on a miss: a second query says whether the model or its alias/version is unknown.
    known = await crud.versions_and_aliases(db, model)
    if known is None:
        raise unknown_model(model)
    versions, aliases = known
    what = f"version {version}" if version is not None else f"alias {alias!r}"
    raise ApiError(
        404,
        "unknown_version",
        f"model {model!r} has no {what} (versions: {versions or 'none'}; "
        f"aliases: {aliases or 'none'})",
    )


def _record(request: Request, model: str, version: int, *, hits: int, asked: int) -> None:
    request.state.log |= {"model": model, "version": version, "hits": hits, "misses": asked - hits}
    lookups = request.app.state.metrics.lookups
    lookups.labels(model, "hit").inc(hits)
    lookups.labels(model, "miss").inc(asked - hits)
