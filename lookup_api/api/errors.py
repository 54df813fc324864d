"""Every error answers with the same JSON body: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lookup_api.core.db import RETRY_AFTER_SECONDS, DatabaseDown, InvalidValue, QueryTimeout
from lookup_api.core.error_body import error_body


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        code, message = (
            ("query_timeout", "the lookup took too long and was cancelled; retry shortly")
            if isinstance(exc, QueryTimeout)
            else ("database_unavailable", "the database is not answering; retry shortly")
        )
        return JSONResponse(
            error_body(code, message), 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    app.add_exception_handler(DatabaseDown, unavailable)
    app.add_exception_handler(QueryTimeout, unavailable)

    @app.exception_handler(InvalidValue)
    async def invalid_value(request: Request, exc: InvalidValue) -> JSONResponse:
        message = f"a value in the request is invalid: {exc}"
        return JSONResponse(error_body("invalid_request", message), 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in exc.errors():
            where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
        return JSONResponse(error_body("invalid_request", "; ".join(problems)), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )
