"""Prometheus metrics of this worker, exposed as PRECOMPUTE_API_METRICS says.

They name the models asked for, the keys' traffic and the error rates: behind a key by default
('key', any key with the read scope), to anyone who reaches the port with 'open', and not served
at all with 'off' (the app then has no such route).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lookup_api.api.deps import require
from lookup_api.api.errors import responses
from lookup_api.core import keys


def router(exposure: Literal["key", "open"]) -> APIRouter:
    """The /metrics route, behind a read key or open."""
    keyed = exposure == "key"
    routes = APIRouter(
        tags=["operations"], dependencies=[Depends(require(keys.READ))] if keyed else []
    )
    routes.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **(responses(401, 403, 503) if keyed else {}),
        },
    )
    return routes


def metrics(request: Request) -> Response:
    """Prometheus metrics of this worker."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
