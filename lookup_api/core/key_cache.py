"""What the API remembers about the keys it has checked, so most requests cost no key query.

Known keys and unknown tokens are kept in two separate bounded caches, each evicting its least
recently used entry when full. Anyone can send made-up tokens, and with one shared cache a flood
of them would push out the valid keys, sending every request of every real client back to the
database; here the tokens only push out each other.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")
KNOWN_KEYS = 10_000
UNKNOWN_TOKENS = 10_000


class KeyCache(Generic[T]):
    """Key hashes and what a check found (a caller, or None for no live key), for `ttl` s."""

    def __init__(
        self, ttl: float, known_size: int = KNOWN_KEYS, unknown_size: int = UNKNOWN_TOKENS
    ) -> None:
        self.ttl = ttl
        self._known: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._known_size = known_size
        self._unknown_size = unknown_size

    def get(self, digest: str, now: float) -> tuple[bool, T | None]:
        """(True, caller) or (True, None) for a fresh answer; (False, None) to ask again."""
        known = self._known.get(digest)
        if known is not None:
            if now - known[0] < self.ttl:
                self._known.move_to_end(digest)
                return True, known[1]
            del self._known[digest]
        checked_at = self._unknown.get(digest)
        if checked_at is not None:
            if now - checked_at < self.ttl:
                self._unknown.move_to_end(digest)
                return True, None
            del self._unknown[digest]
        return False, None

    def put(self, digest: str, found: T | None, now: float) -> None:
        """Remember what the database said about `digest` (None: no live key has it)."""
        if self.ttl <= 0:
            return
        self._known.pop(digest, None)
        self._unknown.pop(digest, None)
        if found is not None:
            self._known[digest] = (now, found)
            if len(self._known) > self._known_size:
                self._known.popitem(last=False)
        else:
            self._unknown[digest] = now
            if len(self._unknown) > self._unknown_size:
                self._unknown.popitem(last=False)
