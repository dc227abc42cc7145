"""Who sent a request to the inbox: its client's address and whether it came
over HTTPS, read from ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when
the peer is one of ``inbox.trusted_proxies``.

``called_url`` rebuilds the URL a provider called, for signatures made over it.

Every proxy appends the address it was reached from to ``X-Forwarded-For``,
so the list is read from the right: the first address that is not a trusted
proxy is the client. Whatever is left of it was written by the client itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

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


def called_url(
    url: str, headers: Mapping[str, str], peer: str | None, *, public_base_url: str | None, trusted: Sequence[IPNetwork]
) -> str:
    """The URL the sender called, for a request the daemon saw as ``url``.

    With ``public_base_url`` (scheme, host and the path prefix of any proxy) it
    is that base and the request's own path and query: no header is read. Without
    it, a peer among ``trusted`` proxies is believed for ``X-Forwarded-Proto``,
    ``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` (each proxy's nearest value);
    from anyone else the request's own URL is the one called."""
    parts = urlsplit(url)
    path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
    if public_base_url is not None:
        return public_base_url.rstrip("/") + path_qs
    peer_ip = ip_of(peer or "")
    if peer_ip is None or not _within(peer_ip, trusted):
        return url
    scheme = (_last(headers, "X-Forwarded-Proto") or parts.scheme).lower()
    host = _last(headers, "X-Forwarded-Host") or parts.netloc
    prefix = (_last(headers, "X-Forwarded-Prefix") or "").rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return f"{scheme}://{host}{prefix}{path_qs}"


def _last(headers: Mapping[str, str], name: str) -> str | None:
    """The nearest proxy's value of a comma-separated forwarding header."""
    getall = getattr(headers, "getall", None)
    raw = getall(name, []) if getall is not None else [headers[name]] if name in headers else []
    values = [value.strip() for header in raw for value in header.split(",") if value.strip()]
    return values[-1] if values else None


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
