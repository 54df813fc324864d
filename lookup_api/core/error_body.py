"""The one shape of every error the API answers: {"error": {"code": ..., "message": ...}}.

Here, below the routes, so that middleware refusing a request before any route runs (an
oversized body) answers in the same shape as the routes do.
"""

from __future__ import annotations

import json


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_json(code: str, message: str) -> bytes:
    return json.dumps(error_body(code, message), separators=(",", ":")).encode()
