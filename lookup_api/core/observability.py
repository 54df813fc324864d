"""One JSON log line per request, and Prometheus metrics: requests, latency, hits and misses."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

LOG = logging.getLogger("lookup_api.access")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The API's metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lookup_requests",
            "HTTP requests by route, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "lookup_request_seconds",
            "Request latency by route.",
            ("route",),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.lookups = Counter(
            "lookup_predictions",
            "Entity ids asked for, by model and result (hit or miss).",
            ("model", "result"),
            registry=self.registry,
        )


def configure_logging() -> None:
    """Access lines go to stdout as they are: each is already one JSON object."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def middleware(
    metrics: Metrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        request.state.log = {}
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route).observe(seconds)
            line: dict[str, Any] = {
                "ts": round(time.time(), 3),
                "method": request.method,
                "route": route,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                **request.state.log,
            }
            LOG.info(json.dumps(line, separators=(",", ":")))

    return observe
