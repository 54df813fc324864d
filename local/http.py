"""The one HTTP client of the local platform, for the servers it starts itself (Airflow's REST
API, the lookup API): JSON in, the status and body out.

Callbacks to users' receivers do not use it: a receiver is not trusted, and
`jobs/callback_client.py` says why that needs its own client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def text(self) -> str:
        return self.body.decode(errors="replace")


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    timeout: float = 30,
) -> Answer:
    """One request; an HTTP error status is an answer, a connection failure raises OSError."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read())


def healthy(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        return call("GET", url, timeout=3).status == 200
    except OSError:
        return False
