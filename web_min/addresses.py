"""Who is asking: the client address behind a trusted proxy, and its rate-limit group.

Proxy headers are believed only when the connection itself comes from a proxy named in
``WXR_TRUST_PROXY``; a client that reaches wxreply directly could otherwise pick any
address with ``X-Forwarded-For`` and make every per-address limit meaningless.

Limits count per *group*: an IPv4 address, or an IPv6 /64.  A single IPv6 customer
usually holds at least a /64 (2^64 addresses), so counting single IPv6 addresses would
let one host rotate through fresh addresses forever.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from tornado.httputil import HTTPServerRequest

IPV6_GROUP_PREFIX = 64
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=64)
def networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _trusted(address: Address | None, proxies: Iterable[Network]) -> bool:
    return address is not None and any(address in net for net in proxies
                                       if net.version == address.version)


def client_address(request: HTTPServerRequest, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy (the
    left part is whatever the client wrote), else ``X-Real-IP``."""
    peer = request.remote_ip or ""
    proxies = networks(trusted)
    if not proxies or not _trusted(_address(peer), proxies):
        return peer or "unknown"
    hops = [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage before it came from the client: stop trusting there
        if not _trusted(address, proxies):
            return str(address)
    real = _address(request.headers.get("X-Real-IP", ""))
    if real is not None:
        return str(real)
    if hops and (last := _address(hops[0])) is not None:
        return str(last)  # every hop is a trusted proxy: the first one is the origin
    return peer


def from_trusted_proxy(request: HTTPServerRequest, trusted: tuple[str, ...]) -> bool:
    return _trusted(_address(request.remote_ip or ""), networks(trusted))


def address_group(address: str) -> str:
    """The unit a per-address limit counts: the address, or its /64 for IPv6."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_GROUP_PREFIX}", strict=False))
    return str(parsed) if parsed is not None else address


def is_loopback(address: str) -> bool:
    parsed = _address(address)
    return parsed is not None and parsed.is_loopback
