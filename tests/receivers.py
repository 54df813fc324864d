"""Real HTTP receivers on 127.0.0.1 for callback tests, polite and hostile."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Receiver:
    """A real server on 127.0.0.1; `behave(connection)` answers each request it reads."""

    behave: Callable[[socket.socket, threading.Event], None]
    requests: list[tuple[float, bytes, bytes]] = field(default_factory=list)  # (when, head, body)
    open_now: int = 0
    most_open: int = 0

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.server.close()

    def header(self, index: int, name: str) -> str:
        for line in self.requests[index][1].decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.lower() == name.lower():
                return value.strip()
        raise KeyError(name)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        try:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += conn.recv(4096)
            self.requests.append((time.monotonic(), head, body))
            self.behave(conn, self.stop)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open_now -= 1
            conn.close()


def answers(status: bytes) -> Callable[[socket.socket, threading.Event], None]:
    def behave(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")

    return behave


def never_answers(conn: socket.socket, stop: threading.Event) -> None:
    # Holds the connection until the client gives up on it.
    conn.settimeout(0.05)
    while not stop.is_set():
        try:
            if not conn.recv(1):
                return
        except TimeoutError:
            continue


def trickles(conn: socket.socket, stop: threading.Event) -> None:
    # A valid reply, one byte every half second: complete after 10 s, were anyone to wait.
    for byte in b"HTTP/1.1 200 OK\r\n\r\n":
        if stop.wait(0.5):
            return
        conn.sendall(bytes([byte]))


def garbage(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"\x00\xff\xfe not http at all \x1b[2J\r\n\r\n")


def redirects(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def hangs_up(conn: socket.socket, stop: threading.Event) -> None:
    conn.shutdown(socket.SHUT_RDWR)
