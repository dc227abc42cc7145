"""Which addresses an event webhook may reach: public ones only, unless its
entry sets ``allow_private: true``.

An endpoint is checked twice. At config validation, a host written as an IP
address or as ``localhost`` is checked (``literal_refusal``), so the mistake
shows with its line. At every delivery the host name is resolved and every
address it resolves to is checked (``GuardedResolver``): one that is not
public refuses the delivery. The resolver hands the connector only the
addresses it checked, so what was checked is what is connected to, and a DNS
answer that changes between the check and the connection (DNS rebinding)
cannot slip through. The request keeps its URL's host name, so TLS still
verifies the certificate of that name and sends it as SNI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

#: The shared address space of carrier-grade NAT (RFC 6598).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: IPv4 addresses embedded in IPv6 by NAT64 gateways (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """A host that resolves to an address event webhooks may not reach."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        self.host = host
        self.address = address
        self.kind = kind
        shown = address if address == host else f"{host} resolves to {address}"
        super().__init__(
            f"{shown}, {article(kind)} {kind} address: event webhooks go to public addresses only "
            "(set allow_private: true on the entry to allow it)"
        )


def article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def address_refusal(address: str | IPAddress) -> str | None:
    """What kind of non-public address ``address`` is (``loopback``,
    ``private``, ``link-local``...), None when it is public. IPv6 addresses
    that carry an IPv4 address (mapped, 6to4, NAT64) are judged by it too."""
    ip = address if not isinstance(address, str) else ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a socket connects to the IPv4 address itself
            return address_refusal(ip.ipv4_mapped)
        embedded = ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            kind = address_refusal(embedded)
            if kind is not None:
                return kind
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT (100.64.0.0/10)", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    )
    return next((kind for kind, refused in checks if refused), None)


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` is written as, None for a host name. The old
    IPv4 forms the C library also reads (``127.1``, ``2130706433``,
    ``0x7f.1``) count as addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def literal_refusal(host: str) -> str | None:
    """What kind of non-public address ``host`` names when it is written as
    an IP address or is ``localhost``; None when it is public or a name to
    resolve."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    address = literal_address(host)
    return None if address is None else address_refusal(address)


class GuardedResolver(AbstractResolver):
    """Resolves with the event loop's ``getaddrinfo`` and refuses (raises
    ``AddressRefused``) a host any of whose addresses is not public, unless
    ``allow_private``; returns only the addresses it checked."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        results: list[ResolveResult] = []
        for found_family, _, proto, _, sockaddr in infos:
            address, found_port = str(sockaddr[0]), int(sockaddr[1])
            if not self.allow_private:
                kind = address_refusal(address)
                if kind is not None:
                    raise AddressRefused(host, address, kind)
            if found_family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
                # A scoped (link-local) address names its interface, as the connector needs it.
                address, service = await loop.getnameinfo(sockaddr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                found_port = int(service)
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": found_port,
                    "family": found_family,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        if not results:
            raise OSError(f"{host} has no address")
        return results

    async def close(self) -> None:
        return None
