"""The API's documentation: Swagger UI from the app's own files, and a truthful OpenAPI document.

Swagger UI's assets come from the `fastapi-offline` package, so /docs works where no CDN can be
reached (the default page loads them from jsDelivr). The document lists the statuses each route
really answers: FastAPI adds a 422 to every route with parameters, which this API never sends
(its validation errors are 400s), and it cannot know the body limits, which are applied in front
of the routes (core/body_limit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static/docs"


def install(app: FastAPI, body_limits: Mapping[str, int], default_limit: int) -> None:
    """Serve /docs and the assets it needs, and the corrected /openapi.json."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            # Swagger UI otherwise asks validator.swagger.io for a badge: nothing leaves.
            swagger_ui_parameters={"validatorUrl": None},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, body_limits, default_limit)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI, body_limits: Mapping[str, int], default_limit: int) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path, operations in document["paths"].items():
        for operation in operations.values():
            answers = operation["responses"]
            answers.pop("422", None)
            if "413" in answers:
                limit = body_limits.get(path, default_limit)
                answers["413"]["description"] = f"The body is over {limit:,} bytes."
                body = operation.setdefault("requestBody", {})
                body["description"] = f"At most {limit:,} bytes (413 above)."
                body["x-max-bytes"] = limit
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
