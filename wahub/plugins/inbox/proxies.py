"""Who sent a request to the inbox: its client's address and whether it came
over HTTPS, read from ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when
the peer is one of ``inbox.trusted_proxies``.

Every proxy appends the address it was reached from to ``X-Forwarded-For``,
so the list is read from the right: the first address that is not a trusted
proxy is the client. Whatever is left of it was written by the client itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients are throttled by their network: one host usually has a whole /64.
IPV6_THROTTLE_PREFIX = 64


@dataclass(frozen=True)
class Client:
    """The request's client, as far as the trusted proxies vouch for it."""

    #: Its IP address (the peer's own text when that is not an IP, ``unknown`` when there is none).
    address: str
    #: It reached wahub (or the trusted proxy) over HTTPS.
    secure: bool


def trusted_networks(entries: Sequence[str]) -> list[IPNetwork]:
    """``inbox.trusted_proxies`` (validated: addresses and CIDR networks) as networks."""
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def client_of(request: web.Request, trusted: Sequence[IPNetwork]) -> Client:
    """The request's client: the peer itself unless the peer is a trusted proxy;
    then the right-most ``X-Forwarded-For`` address that is not one, and HTTPS
    when the nearest proxy's ``X-Forwarded-Proto`` says ``https``."""
    peer = request.remote or ""
    peer_ip = ip_of(peer)
    if peer_ip is None or not _within(peer_ip, trusted):
        return Client(str(peer_ip) if peer_ip is not None else peer or "unknown", request.secure)
    address: IPAddress = peer_ip
    for entry in reversed(_header_values(request, "X-Forwarded-For")):
        forwarded = ip_of(entry)
        if forwarded is None:
            # Not an address: a trusted proxy did not write it, so nothing left of it is believed.
            break
        address = forwarded
        if not _within(forwarded, trusted):
            break
    protocols = _header_values(request, "X-Forwarded-Proto")
    secure = request.secure or (bool(protocols) and protocols[-1].lower() == "https")
    return Client(str(address), secure)


def throttle_address(address: str) -> str:
    """What failed sign-ins from ``address`` are counted under: the address,
    or for IPv6 its /64 network."""
    ip = ip_of(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/{IPV6_THROTTLE_PREFIX}", strict=False))
    return address


def ip_of(text: str) -> IPAddress | None:
    """The IP address in ``text`` (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:5678``; an IPv4-mapped IPv6 address as IPv4), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(ip.version == network.version and ip in network for network in networks)


def _header_values(request: web.Request, name: str) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order."""
    values = (value.strip() for header in request.headers.getall(name, []) for value in header.split(","))
    return [value for value in values if value]
