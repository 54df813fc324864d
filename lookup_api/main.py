"""Builds the lookup API: `uvicorn --factory lookup_api.main:create_app`, or `precompute api`."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lookup_api.api import docs, errors
from lookup_api.api.routes import health, metrics, models, predictions, runs, score_requests
from lookup_api.core import observability
from lookup_api.core.body_limit import BodyLimit
from lookup_api.core.db import Database
from lookup_api.core.key_cache import KeyCache
from lookup_api.core.lookup_spool import Spool
from precompute import callback_targets, database
from precompute.contracts import load_contract
from precompute.settings import Settings, get_settings

# Routes without a body of their own (GETs) still get one read if a client sends it: a little.
OTHER_BODY_BYTES = 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    # Made per worker process (the factory runs in each): a spool file has one writer.
    spool = (
        Spool(
            settings.lookup_log_dir,
            settings.lookup_log_flush_seconds,
            settings.lookup_log_rotate_seconds,
        )
        if settings.lookup_log
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database.database_url(settings, "api")
        # Reads are nearly every request: generic plans, and read-only as a second guard.
        app.state.db = Database(
            url,
            settings.api_pool_size,
            settings.api_statement_timeout_ms,
            generic_plans=True,
            read_only=True,
        )
        # Only score requests write, and they are rare: a small pool of their own.
        app.state.writer = Database(url, 2, settings.api_statement_timeout_ms)
        await app.state.db.open()
        await app.state.writer.open()
        if spool is not None:
            spool.start()
        # Everything loaded so far lives as long as the process. Left in the collector's
        # oldest generation, each full collection walks all of it (30 ms on the 2-core machine),
        # stalling whichever requests are in flight: the lookups' p99 tail.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if spool is not None:
                spool.close()  # what is queued is written: a restart loses nothing
        await app.state.db.close()
        await app.state.writer.close()

    app = FastAPI(
        title="precompute lookup API",
        description="Precomputed predictions by key, from the PostgreSQL serving tables.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by docs.install from local files, not a CDN
        redoc_url=None,
    )
    app.state.metrics = observability.Metrics()
    app.state.key_cache = KeyCache(settings.api_key_cache_seconds)
    app.state.max_pending_requests = settings.api_max_pending_requests
    app.state.callback_allowed = callback_targets.Allowed.parse(settings.callback_allowed_hosts)
    app.state.contracts = functools.lru_cache(maxsize=64)(
        functools.partial(load_contract, settings.contracts_dir)
    )
    body_limits = {
        score_requests.router.prefix: settings.api_max_request_bytes,
        predictions.BATCH_GET_PATH: settings.api_max_batch_bytes,
    }
    observability.configure_logging()
    # Outermost last: Observe sees (and logs) the 413s BodyLimit answers.
    app.add_middleware(BodyLimit, limits=body_limits, default=OTHER_BODY_BYTES)
    app.add_middleware(
        observability.Observe,
        metrics=app.state.metrics,
        spool=spool,
        spooled_routes=predictions.LOOKUP_ROUTES,
    )
    errors.install(app)
    docs.install(app, body_limits, OTHER_BODY_BYTES)
    for module in (health, predictions, models, runs, score_requests):
        app.include_router(module.router)
    if settings.api_metrics != "off":
        app.include_router(metrics.router(settings.api_metrics))
    return app
