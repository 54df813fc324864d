"""One JSON log line per request, and Prometheus metrics: requests, latency, hits and misses.

Lookups' lines also go to the lookup log's spool (`lookup_api.core.lookup_spool`), with a
request id, when the spool is on."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookup_api.core.lookup_spool import Spool

LOG = logging.getLogger("lookup_api.access")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A client may send any token as the method: as a label it would grow the registry without end.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
        self.key_checks = Counter(
            "lookup_key_checks",
            "API keys checked in the database (not answered from the cache), by result: "
            "known or unknown.",
            ("result",),
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


class Observe:
    """ASGI middleware: times each request, counts it, logs it as one JSON line.

    Written against ASGI directly: Starlette's BaseHTTPMiddleware costs a task and a stream
    per request, a large share of a lookup's time.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        spool: Spool | None = None,
        spooled_routes: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.spool = spool
        self.spooled_routes = spooled_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            line = {
                "ts": round(time.time(), 3),
                "method": scope["method"],
                "route": route,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                **fields,
            }
            spool = self.spool if route in self.spooled_routes else None
            if spool is not None:
                line["request_id"] = spool.request_id()
            text = json.dumps(line, separators=(",", ":"))
            LOG.info(text)
            if spool is not None:
                spool.put(text)
