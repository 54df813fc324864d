"""One callback POST to a checked address, all of it within one deadline.

Written on sockets rather than urllib or http.client because a receiver is not trusted: urllib
resolves the name again (a second lookup may answer with a private address), follows redirects
(to anywhere, 169.254.169.254 included), and its timeout bounds each read, not the whole reply,
so a receiver trickling a byte a second holds it for as long as it likes. Here the connection
goes to an address `callback_targets.resolve` checked, every step gets only the time left before
the deadline, a redirect is a failed delivery, and only the reply's status is read.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass

from precompute.callback_targets import Target

MAX_HEAD_BYTES = 16_384
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?")


class BadReply(Exception):
    """The receiver answered something that is not an HTTP reply."""


@dataclass(frozen=True)
class Reply:
    status: int

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        if 300 <= self.status < 400:
            return f"the receiver answered HTTP {self.status}; redirects are not followed"
        return f"the receiver answered HTTP {self.status}"


def post(target: Target, body: bytes, headers: dict[str, str], deadline: float) -> Reply:
    """POST the body to the target; raises on any failure to get a reply before `deadline`
    (a `time.monotonic()` value)."""
    sock = _connect(target, deadline)
    try:
        if target.scheme == "https":
            # The certificate is checked against the URL's host name, sent as SNI, although the
            # connection went to an address.
            context = ssl.create_default_context()
            sock = context.wrap_socket(
                sock, server_hostname=target.host, do_handshake_on_connect=False
            )
            sock.settimeout(_left(deadline))
            sock.do_handshake()
        sock.settimeout(_left(deadline))
        sock.sendall(_request(target, body, headers))  # one deadline for the whole send
        return Reply(_status(sock, deadline))
    finally:
        sock.close()


def _connect(target: Target, deadline: float) -> socket.socket:
    error: OSError = ConnectionError(f"no address to connect to for {target.host}")
    for address in target.addresses:
        try:
            # An address, not a name: nothing is looked up again here.
            return socket.create_connection((address, target.port), timeout=_left(deadline))
        except TimeoutError:
            raise
        except OSError as exc:
            error = exc
    raise error


def _request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "User-Agent: precompute-callbacks",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _status(sock: socket.socket, deadline: float) -> int:
    """The reply's final status: its head is read (1xx interim replies skipped), its body not."""
    buffer = b""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            line = buffer.split(b"\r\n", 1)[0]
            match = STATUS_LINE.fullmatch(line)
            if match is None:
                raise BadReply(f"the reply is not HTTP: it starts {line[:40]!r}")
            status = int(match.group(1))
            if status >= 200:
                return status
            buffer = buffer[end + 4 :]
            continue
        if buffer and not b"HTTP/1.".startswith(buffer[:7]):
            raise BadReply(f"the reply is not HTTP: it starts {buffer[:40]!r}")
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadReply(f"the reply's head is over {MAX_HEAD_BYTES} bytes")
        sock.settimeout(_left(deadline))
        chunk = sock.recv(4096)
        if not chunk:
            raise BadReply("the receiver closed the connection before a complete reply")
        buffer += chunk


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    return left
