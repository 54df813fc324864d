"""Builds the lookup API: `uvicorn --factory lookup_api.main:create_app`, or `precompute api`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lookup_api.api import errors
from lookup_api.api.routes import health, models, predictions, runs
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
        yield
        app.state.db.close()

    app = FastAPI(
        title="precompute lookup API",
        description="Precomputed predictions by key, from the PostgreSQL serving tables.",
        version="1",
        lifespan=lifespan,
    )
    app.state.metrics = observability.Metrics()
    app.state.key_cache = {}
    app.state.key_cache_seconds = settings.api_key_cache_seconds
    observability.configure_logging()
    app.middleware("http")(observability.middleware(app.state.metrics))
    errors.install(app)
    for module in (health, predictions, models, runs):
        app.include_router(module.router)
    return app
