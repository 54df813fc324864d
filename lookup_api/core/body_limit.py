"""Request bodies are bounded as they arrive, before anything parses them or checks a key.

FastAPI reads a route's whole body before it runs the route's dependencies (the key check among
them), and Starlette keeps all of it in memory: without a bound here, anyone who reaches the port
could make a worker hold a body of any size without a key.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookup_api.core.error_body import error_json


class BodyLimit:
    """ASGI middleware: a body over its route's limit gets 413 and the rest is never read.

    A declared Content-Length over the limit is refused before any of the body is read. A body
    without one (chunked) is read here, holding at most `limit` bytes, and handed on only once
    it is complete and within the limit. The 413 closes the connection, so the server stops
    reading what the client still sends.

    Written against ASGI directly, as `observability.Observe` is: the common case (a GET without
    a body, or a declared length within the limit) costs one scan of the headers.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked:
            # The server delivers exactly the declared length (and no body without one).
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await _refuse(send, limit)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse(send, limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the server's own events (a disconnect)."""
    pending = [body]

    async def replayed() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, limit: int) -> None:
    payload = error_json(
        "payload_too_large", f"the request body is over this route's limit of {limit} bytes"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
