"""Where score request callbacks may go: public internet addresses, and what an operator allows.

A callback URL comes from a client, and the platform posts to it from inside the deployment:
unchecked, a client could have it call the cloud metadata service (169.254.169.254), the
database's port on loopback or anything on the private network. The API checks a URL when it is
submitted, and the deliverer checks it again when it posts, because a name can resolve
differently by then. The deliverer resolves the name once and connects to an address it checked
(`Target.addresses`), never resolving again, so a name cannot switch to a private address between
the check and the connection (DNS rebinding).

`PRECOMPUTE_CALLBACK_ALLOWED_HOSTS` lists exceptions: host names or addresses a URL may name, and
networks (CIDR) its addresses may be in, for tests and private deployments.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from precompute.errors import PrecomputeError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 prefixes that carry an IPv4 address a gateway may translate to (NAT64, RFC 6052/8215).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
LOOKUP_SECONDS = 2.0


class RefusedTarget(PrecomputeError):
    """A callback URL that may not be called; the message is fit for the client who gave it."""


@dataclass(frozen=True)
class Allowed:
    """The operator's exceptions to the public-address rule."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowed:
        hosts, networks = set(), []
        for entry in entries:
            entry = entry.strip().lower().strip("[]")
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
            elif entry:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, address: Address) -> bool:
        return str(address) in self.hosts or any(address in n for n in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked callback URL: where to connect and what to send."""

    scheme: str
    host: str  # as the URL names it (lower case, IDNA): the Host header and TLS server name
    port: int
    path: str  # path and query, the request line's target
    addresses: tuple[str, ...] = ()  # what the host resolved to, each one checked

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def is_public(address: Address) -> bool:
    """Whether an address is a unicast address on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in n for n in NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:  # judged by the IPv4 address it reaches
            return is_public(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def parse(url: str) -> Target:
    """The URL's parts, without resolving anything; refuses what is not an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RefusedTarget("callback_url must be an http:// or https:// URL")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise RefusedTarget("callback_url has an invalid host or port") from None
    if not host:
        raise RefusedTarget("callback_url names no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # The path goes into the request line verbatim: nothing may end or split it.
    if any(c <= " " or c > "~" for c in path):
        raise RefusedTarget("callback_url has characters a URL path cannot hold unencoded")
    return Target(scheme, host, port, path)


def resolve(url: str, allowed: Allowed, timeout: float = LOOKUP_SECONDS) -> Target:
    """The URL checked: its host resolved once, and every address it has public or allowed."""
    target = parse(url)
    literal = _literal(target.host)
    addresses = [literal] if literal is not None else _lookup(target, timeout)
    if target.host not in allowed.hosts and not all(
        is_public(a) or allowed.permits(a) for a in addresses
    ):
        raise _not_public(target.host, "address" if literal is not None else "host")
    return Target(target.scheme, target.host, target.port, target.path, tuple(map(str, addresses)))


async def refusal(url: str, allowed: Allowed, timeout: float = LOOKUP_SECONDS) -> str | None:
    """For the API: why the URL is refused, None when it may be called."""
    try:
        await asyncio.to_thread(resolve, url, allowed, timeout)
    except RefusedTarget as exc:
        return str(exc)
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _lookup(target: Target, timeout: float) -> list[Address]:
    """The host's addresses, in the resolver's order; a name that does not resolve in time is
    refused like a private one (getaddrinfo has no timeout of its own, hence the thread)."""
    found: list[Address] = []

    def work() -> None:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)

    lookup = threading.Thread(target=work, name="callback-dns", daemon=True)
    lookup.start()
    lookup.join(timeout)
    if lookup.is_alive() or not found:
        raise _not_public(target.host, "host")
    return list(found)


def _not_public(host: str, what: str) -> RefusedTarget:
    # One message whether a name does not resolve or resolves to a private address, and never
    # the addresses themselves: a client learns nothing of the deployment's DNS.
    return RefusedTarget(
        f"callback_url {what} {host} is not a public internet {what}; "
        "callbacks go only to public addresses"
    )
