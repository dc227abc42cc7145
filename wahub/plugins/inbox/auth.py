"""Who may use the inbox: sign-in and sign-out, sessions, CSRF and origin
checks, throttled and locked sign-ins, and the page's security headers.

Every inbox handler is wrapped by ``guarded``; the WebSocket upgrade checks
``socket_session``. API bearer tokens open nothing here, and the session
cookie opens nothing under ``/api/v1``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from wahub.core.storage.operators import Operator, Session
from wahub.plugins.inbox.state import Inbox

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The session cookie: HTTP-only, SameSite=Strict, Secure when served over HTTPS.
COOKIE = "wahub_session"
#: The header every state-changing request carries, equal to the session's CSRF token.
CSRF_HEADER = "X-CSRF-Token"


def operator_of(request: web.Request) -> Operator:
    """The signed-in operator of a request that went through ``guarded``."""
    raise NotImplementedError


def session_of(request: web.Request) -> Session:
    """The session of a request that went through ``guarded``."""
    raise NotImplementedError


def guarded(inbox: Inbox, handler: Handler, *, page: bool = False, admin: bool = False) -> Handler:
    """``handler`` for signed-in operators only, its answers with the security headers.

    ``page``: an HTML page; without a session it redirects to ``/inbox/login``.
    Otherwise JSON: 401 ``signed_out`` without a valid session; for every
    method but GET and HEAD, 403 ``cross_origin`` unless the request comes
    from the inbox's own origin and 403 ``csrf`` unless it carries the
    session's token in ``X-CSRF-Token``; ``admin``: 403 ``admin_only`` for
    other operators.
    """
    raise NotImplementedError


async def socket_session(inbox: Inbox, request: web.Request) -> Session | None:
    """The session of a WebSocket upgrade from the inbox's own origin, or None."""
    raise NotImplementedError


def auth_routes(inbox: Inbox) -> list[web.RouteDef]:
    """``GET|POST /inbox/login``, ``POST /inbox/logout`` and the admins'
    ``/inbox/api/operators`` endpoints."""
    return []


def secure_headers(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` with the inbox's security headers (its Content-Security-Policy
    ``default-src 'self'``, no framing, no sniffing, no referrer to other hosts)."""
    raise NotImplementedError
