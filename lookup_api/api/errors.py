"""Every error answers with the same JSON body: {"error": {"code": ..., "message": ...}}.

Answers never carry what only the server should know (database messages, file paths,
tracebacks): a message says what was wrong with the request, or that the server failed, and the
detail goes to the request's log line as `detail`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lookup_api.api.schemas import BATCH_LIMIT, MAX_ID_LENGTH, ErrorBody
from lookup_api.core.db import RETRY_AFTER_SECONDS, DatabaseDown, InvalidValue, QueryTimeout
from lookup_api.core.error_body import error_body

# What each error status means on every route that can answer it; a route adds its own 404/409.
MEANING = {
    400: "The request is invalid: a parameter, the body or an entity id; the message says which.",
    401: "No API key, or one that is malformed, unknown or revoked.",
    403: "The API key lacks the scope this route needs.",
    404: "Not found.",
    409: "Conflict.",
    413: "The body is over this route's limit.",
    429: "Too many requests.",
    503: "The database is not answering or a query took too long: retry after Retry-After s.",
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}},
}
_ENTITY_ID_PROBLEMS = {
    "string_too_short": "an entity id cannot be empty",
    "string_too_long": f"an entity id is at most {MAX_ID_LENGTH} characters",
    "string_pattern_mismatch": "an entity id cannot contain control characters",
}


class ApiError(Exception):
    """An answer other than success; `detail` is for the server log only."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.detail = detail


def unknown_model(name: str) -> ApiError:
    """The 404 for a model name the registry does not have (every route says it the same way)."""
    return ApiError(404, "unknown_model", f"no model named {name!r} (GET /v1/models lists them)")


def responses(*statuses: int, **meaning: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route's error statuses; `meaning` overrides, as s404="..."."""
    return {
        status: {
            "model": ErrorBody,
            "description": meaning.get(f"s{status}", MEANING[status]),
            **({"headers": HEADERS[status]} if status in HEADERS else {}),
        }
        for status in statuses
    }


def json_errors(answers: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """`responses(...)` for a route whose success is not JSON: FastAPI would label the error
    bodies with the route's own media type, but they are the same JSON as everywhere."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {
        status: {key: value for key, value in meaning.items() if key != "model"} | {"content": body}
        for status, meaning in answers.items()
    }


def answer(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error response. A message may quote the client's input, which need not be valid
    Unicode (a lone surrogate from a JSON escape): such characters are written as escapes, so the
    answer can always be encoded."""
    printable = message.encode("utf-8", "backslashreplace").decode()
    return JSONResponse(error_body(code, printable), status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.detail:
            request.state.log["detail"] = exc.detail
        return answer(exc.code, exc.message, exc.status, exc.headers)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        request.state.log["detail"] = str(exc)
        code, message = (
            ("query_timeout", "the lookup took too long and was cancelled; retry shortly")
            if isinstance(exc, QueryTimeout)
            else ("database_unavailable", "the database is not answering; retry shortly")
        )
        return answer(code, message, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    app.add_exception_handler(DatabaseDown, unavailable)
    app.add_exception_handler(QueryTimeout, unavailable)

    @app.exception_handler(InvalidValue)
    async def invalid_value(request: Request, exc: InvalidValue) -> JSONResponse:
        request.state.log["detail"] = str(exc)  # PostgreSQL's words: for the log, not the client
        message = (
            "a value in the request cannot be stored or compared: for example a NUL character "
            "or a number out of range"
        )
        return answer("invalid_request", message, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(error) for error in exc.errors()]
        codes = {code for code, _ in problems}
        code = codes.pop() if len(codes) == 1 else "invalid_request"
        return answer(code, "; ".join(m for _, m in problems), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return answer(code, str(exc.detail), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after answering, so the server log gets the traceback.
        message = "the server failed to answer this request; its log has the details"
        return answer("internal_error", message, 500)


def _problem(error: Any) -> tuple[str, str]:
    """A validation error as (code, message); entity ids and batch sizes have codes of their own."""
    loc = [part for part in error.get("loc", ()) if part != "body"]
    where = ".".join(str(part) for part in loc) or "body"
    kind = error.get("type", "")
    field = next((part for part in reversed(loc) if isinstance(part, str)), "")
    if field in ("entity_id", "ids") and kind in _ENTITY_ID_PROBLEMS:
        return "invalid_entity_id", f"{where}: {_ENTITY_ID_PROBLEMS[kind]}"
    if field == "ids" and kind == "too_long":
        asked = error.get("ctx", {}).get("actual_length", "more")
        return "batch_too_large", f"{asked} ids asked for; the limit is {BATCH_LIMIT}"
    return "invalid_request", f"{where}: {error.get('msg', 'invalid')}"
