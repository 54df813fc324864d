"""Builds the lookup API: `uvicorn --factory lookup_api.main:create_app`, or `precompute api`."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jobs.contracts import load_contract
from lookup_api import crud
from lookup_api.api import errors
from lookup_api.api.routes import health, models, predictions, runs, score_requests
from lookup_api.core import observability
from lookup_api.core.db import Database
from precompute import database
from precompute.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(
            database.database_url(settings, "reader"),
            settings.api_pool_size,
            settings.api_statement_timeout_ms,
        )
        app.state.db.prepare("lookup", crud.LOOKUP_TYPES, crud.PREPARED_LOOKUP)
        # Only score requests write, and they are rare: a small pool of their own.
        app.state.writer = Database(
            database.database_url(settings, "writer"), 2, settings.api_statement_timeout_ms
        )
        yield
        app.state.db.close()
        app.state.writer.close()

    app = FastAPI(
        title="precompute lookup API",
        description="Precomputed predictions by key, from the PostgreSQL serving tables.",
        version="1",
        lifespan=lifespan,
    )
    app.state.metrics = observability.Metrics()
    app.state.key_cache = {}
    app.state.key_cache_seconds = settings.api_key_cache_seconds
    app.state.max_request_bytes = settings.api_max_request_bytes
    app.state.max_pending_requests = settings.api_max_pending_requests
    app.state.contracts = functools.lru_cache(maxsize=64)(
        functools.partial(load_contract, settings.contracts_dir)
    )
    observability.configure_logging()
    app.add_middleware(observability.Observe, metrics=app.state.metrics)
    errors.install(app)
    for module in (health, predictions, models, runs, score_requests):
        app.include_router(module.router)
    return app
