"""Which requests the sandbox's chat page, files and socket answer.

The sandbox has no authentication, so it must not be reachable from a page
on another site: through DNS rebinding such a page reaches it under its own
host name (refused here by the ``Host`` check), and a page elsewhere can open
its WebSocket from a visitor's browser (refused by the ``Origin`` check).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from yarl import URL

#: Names of this machine a browser on it may use for the chat page.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_allowed(hosts: Sequence[str], bind: str, host: str) -> bool:
    """Whether a ``Host`` value is one of the sandbox's: a ``hosts`` entry with a
    port matches exactly, one without matches on any port. With no ``hosts``,
    the bind address and the loopback names, on any port (a container's port
    may be published as another)."""
    bind = bind.lower()
    entries = {entry.lower() for entry in hosts} or {*LOOPBACK_NAMES, f"[{bind}]" if ":" in bind else bind}
    host = host.lower()
    name = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
    return host in entries or name in entries


def check_host(hosts: Sequence[str], bind: str, request: web.Request) -> None:
    """Refuse (403) a request naming another host, and a browser page from another origin."""
    if not host_allowed(hosts, bind, request.host):
        raise web.HTTPForbidden(
            text="misdirected: this host name is not one of the sandbox's hosts (sandbox provider key 'hosts')"
        )
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a cross-origin browser request: the terminal client, or the page itself
    try:
        parsed = URL(origin)
        same = parsed.scheme in ("http", "https") and parsed.host_port_subcomponent == request.host.lower()
    except ValueError:
        same = False
    if not same:
        raise web.HTTPForbidden(text="the sandbox chat only accepts its own page")
