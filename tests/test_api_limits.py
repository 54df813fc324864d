"""Bodies are bounded as they arrive: a client that sends too much, declared or streamed, with or
without a key, is answered 413 at once, and the server reads and holds no more than the limit.

The clients here are raw sockets, as an attacker's would be: HTTP clients refuse to stream a body
nobody reads, or buffer it first.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from api_support import FEATURES, Api, rss_kib, seeded_database, served, server_pid

from precompute.settings import Settings

MB = 2**20
STREAMED = 100 * MB
# Each route's limit by default: score requests, batchGet, any other route.
ROUTES = [
    ("POST", "/v1/score-requests", 16_384),
    ("POST", "/v1/predictions:batchGet?model=churn", 1_048_576),
    ("GET", "/v1/models", 1024),
    ("GET", "/healthz", 1024),
]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float  # from the first byte sent to the whole answer read
    sent: int  # body bytes the client got onto the wire before it had the answer


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with (
        seeded_database(admin_url, settings) as url,
        served(url, tmp_path_factory.mktemp("limits") / "api.log") as api,
    ):
        yield api


def raw_request(
    port: int, head: str, body: Iterator[bytes] | None = None, timeout: float = 10
) -> Answer:
    """Send `head`, then `body` chunk by chunk for as long as the server takes it, reading the
    answer as soon as it comes: what a client that ignores the server does."""
    started = time.perf_counter()
    sent = 0
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(head.encode())
        body = body or iter(())
        pending = next(body, b"")
        while not _complete(received):
            if time.perf_counter() - started > timeout:
                raise AssertionError(f"no answer in {timeout} s (sent {sent} bytes)")
            readable, writable, _ = select.select([client], [client] if pending else [], [], 1)
            if readable:
                try:
                    data = client.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
            elif writable:
                try:
                    written = client.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    pending = b""
                    continue
                sent += written
                pending = pending[written:] or next(body, b"")
    seconds = time.perf_counter() - started
    head_bytes, _, payload = received.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1]) if head_bytes else 0
    return Answer(status, json.loads(payload) if payload else {}, seconds, sent)


def _complete(received: bytes) -> bool:
    head, separator, payload = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(payload) >= int(value)
    return False


def chunked(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A chunked body of `total` bytes of JSON-looking filler, then its end."""
    frame = b"%x\r\n" % chunk + b"1" * chunk + b"\r\n"
    for _ in range(total // chunk):
        yield frame
    yield b"0\r\n\r\n"


def head(method: str, path: str, *lines: str) -> str:
    fields = ["Host: 127.0.0.1", "Content-Type: application/json", *lines]
    return f"{method} {path} HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n"


@pytest.mark.parametrize(("method", "path", "limit"), ROUTES)
def test_a_streamed_100_mb_body_without_a_key_gets_413_at_once(
    api: Api, method: str, path: str, limit: int
) -> None:
    answer = raw_request(
        api.port, head(method, path, "Transfer-Encoding: chunked"), chunked(STREAMED)
    )
    assert answer.status == 413, answer
    assert answer.body["error"]["code"] == "payload_too_large"
    assert f"limit of {limit} bytes" in answer.body["error"]["message"]
    assert answer.seconds < 2
    assert answer.sent < STREAMED // 4, "the server read on after the limit"


@pytest.mark.parametrize(("method", "path", "limit"), ROUTES)
def test_a_declared_length_over_the_limit_gets_413_before_any_body_is_sent(
    api: Api, method: str, path: str, limit: int
) -> None:
    answer = raw_request(api.port, head(method, path, f"Content-Length: {limit + 1}"))
    assert answer.status == 413 and answer.sent == 0, answer
    assert answer.body["error"]["code"] == "payload_too_large"
    assert answer.seconds < 2


def test_streaming_100_mb_bodies_leaves_the_servers_memory_flat(api: Api) -> None:
    pid = server_pid(api.port)
    raw_request(api.port, head("GET", "/healthz"))  # whatever a first request loads
    before = rss_kib(pid)
    for method, path, _ in ROUTES * 2:
        raw_request(api.port, head(method, path, "Transfer-Encoding: chunked"), chunked(STREAMED))
        raw_request(api.port, head(method, path, f"Content-Length: {STREAMED}"), chunked(STREAMED))
    assert rss_kib(pid) - before < 20 * 1024, "the server's memory grew by 20 MB or more"


def test_a_body_within_the_limit_goes_on_to_the_key_check_and_the_route(api: Api) -> None:
    body = json.dumps({"model": "churn", "entity_id": "c-limits", "features": FEATURES}).encode()
    frames = iter([b"%x\r\n%s\r\n" % (len(body), body), b"0\r\n\r\n"])
    streamed = head("POST", "/v1/score-requests", "Transfer-Encoding: chunked")
    assert raw_request(api.port, streamed, frames).status == 401  # no key: refused after all
    with_key = raw_request(
        api.port,
        head(
            "POST",
            "/v1/score-requests",
            "Transfer-Encoding: chunked",
            f"Authorization: Bearer {api.submit_key}",
        ),
        iter([b"%x\r\n%s\r\n" % (len(body), body), b"0\r\n\r\n"]),
    )
    assert with_key.status == 202, with_key


@pytest.mark.parametrize("character", ["x", "\U0001f600"], ids=["ascii", "4-byte-utf8"])
def test_the_batch_limit_admits_1000_ids_of_256_characters(api: Api, character: str) -> None:
    ids = [f"{i:04d}" + character * 252 for i in range(1000)]
    body = json.dumps({"ids": ids}, ensure_ascii=False).encode()
    response = httpx.post(
        f"{api.base}/v1/predictions:batchGet",
        params={"model": "churn"},
        content=body,
        headers={"Authorization": f"Bearer {api.reader_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["missing"]) == 1000
