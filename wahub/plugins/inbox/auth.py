"""Who may use the inbox: sign-in and sign-out, sessions, CSRF and origin
checks, throttled and locked sign-ins, and the page's security headers.

Every inbox handler is wrapped by ``guarded``; the WebSocket upgrade checks
``socket_session``. API bearer tokens open nothing here, and the session
cookie opens nothing under ``/api/v1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from wahub.core.http.api_io import error
from wahub.core.http.proxies import Client, client_of, throttle_address, trusted_networks
from wahub.core.storage.operators import Operator, OperatorStore, Session, Throttle
from wahub.plugins.inbox.passwords import Passwords, name_problem
from wahub.plugins.inbox.state import Inbox

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The session cookie: HTTP-only, SameSite=Strict, Secure when served over HTTPS
#: (or with ``inbox.secure_cookies: always``).
COOKIE = "wahub_session"
#: The header every state-changing request carries, equal to the session's CSRF token.
CSRF_HEADER = "X-CSRF-Token"
#: The sign-in form's own CSRF cookie, double-submitted as the form's ``csrf`` field.
LOGIN_COOKIE = "wahub_login"
LOGIN_COOKIE_SECONDS = 30 * 60
LOGIN_PATH = "/inbox/login"

#: A session's expiry is extended at most this often (one write a minute, not one a request).
TOUCH_EVERY = 60.0
#: Delay before a failed sign-in's answer: the first past ``slow_after`` waits
#: ``SLOW_FIRST`` seconds, each next one twice as long, never over ``SLOW_MOST``.
SLOW_FIRST, SLOW_MOST = 1.0, 8.0
#: Longest cookie token read (``token_urlsafe(32)`` is 43 characters).
_MAX_TOKEN = 128

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

WEB_DIR = Path(__file__).resolve().parents[2] / "web" / "inbox"

_SESSION_KEY = web.RequestKey("wahub_inbox_session", Session)
_PASSWORDS_KEY = "inbox_passwords"


def token_hash(token: str) -> str:
    """What the store keeps of a session cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def secure_headers(response: web.StreamResponse, *, cache: bool = False) -> web.StreamResponse:
    """Add the inbox's security headers to ``response`` (before it is sent) and
    return it; ``Cache-Control: no-store`` too unless ``cache`` (static files).
    A header the handler set already (a stricter policy for a stored file) is kept."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def operator_of(request: web.Request) -> Operator:
    """The signed-in operator of a request that went through ``guarded``."""
    return session_of(request).operator


def session_of(request: web.Request) -> Session:
    """The session of a request that went through ``guarded``."""
    try:
        return request[_SESSION_KEY]
    except KeyError:
        raise RuntimeError(f"{request.path} was not served through auth.guarded: it has no session") from None


def guarded(inbox: Inbox, handler: Handler, *, page: bool = False, admin: bool = False) -> Handler:
    """``handler`` for signed-in operators only, its answers with the security headers.

    ``page``: an HTML page; without a session it redirects to ``/inbox/login``.
    Otherwise JSON: 401 ``signed_out`` without a valid session; for every
    method but GET and HEAD, 403 ``cross_origin`` unless the request comes
    from the inbox's own origin and 403 ``csrf`` unless it carries the
    session's token in ``X-CSRF-Token``; ``admin``: 403 ``admin_only`` for
    other operators.
    """

    async def checked(request: web.Request) -> web.StreamResponse:
        refusal = _cross_origin(inbox, request)
        if refusal is not None:
            return _refused(page, 403, "cross_origin", refusal)
        session = await current_session(inbox, request)
        if session is None:
            if page:
                raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='/')}")
            return error(401, "signed_out", "not signed in, or the session has ended: sign in again")
        if request.method not in ("GET", "HEAD") and not _csrf_matches(
            request.headers.get(CSRF_HEADER, ""), session.csrf_token
        ):
            return _refused(page, 403, "csrf", f"missing or wrong {CSRF_HEADER} header: reload the page")
        if admin and not session.operator.is_admin:
            return _refused(page, 403, "admin_only", "only an admin may do this")
        request[_SESSION_KEY] = session
        return await handler(request)

    return _with_headers(checked, page=page)


async def socket_session(inbox: Inbox, request: web.Request) -> Session | None:
    """The session of a WebSocket upgrade from the inbox's own origin, or None."""
    if _cross_origin(inbox, request, always=True) is not None:
        return None
    return await current_session(inbox, request)


def origin_refusal(inbox: Inbox, request: web.Request) -> str | None:
    """Why ``request`` (of any method, a socket upgrade included) is refused as
    coming from another origin than the inbox's own, or None."""
    return _cross_origin(inbox, request, always=True)


async def current_session(inbox: Inbox, request: web.Request) -> Session | None:
    """The request's valid session (by its cookie), extended when it is due."""
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > _MAX_TOKEN:
        return None
    store = store_of(inbox)
    now = inbox.hub.clock.time()
    session = await store.session(token_hash(token), now=now)
    if session is not None and now - session.seen_at >= TOUCH_EVERY:
        await store.touch_session(session.token_hash, now=now, expires_at=_expiry(inbox, session.created_at, now))
    return session


def auth_routes(inbox: Inbox) -> list[web.RouteDef]:
    """``GET|POST /inbox/login`` and ``POST /inbox/logout`` (the admins'
    operator endpoints are in ``admin``)."""

    async def show_login(request: web.Request) -> web.StreamResponse:
        if await current_session(inbox, request) is not None:
            raise web.HTTPSeeOther("/inbox")
        return await _login_page(inbox, request, status=200, next_path=_next_path(request.query.get("next")))

    async def sign_in(request: web.Request) -> web.StreamResponse:
        return await _sign_in(inbox, request)

    async def sign_out(request: web.Request) -> web.StreamResponse:
        refusal = _cross_origin(inbox, request)
        if refusal is not None:
            return _refused(True, 403, "cross_origin", refusal)
        session = await current_session(inbox, request)
        if session is not None:
            form = await request.post()
            given = request.headers.get(CSRF_HEADER) or str(form.get("csrf", ""))
            if not _csrf_matches(given, session.csrf_token):
                return _refused(True, 403, "csrf", "the sign-out form is out of date: reload the page")
            await store_of(inbox).end_session(session.token_hash)
        response = web.HTTPSeeOther(LOGIN_PATH)
        response.del_cookie(COOKIE, path="/inbox")
        raise response

    return [
        web.get(LOGIN_PATH, _with_headers(show_login, page=True)),
        web.post(LOGIN_PATH, _with_headers(sign_in, page=True)),
        web.post("/inbox/logout", _with_headers(sign_out, page=True)),
    ]


# -- answers -----------------------------------------------------------------


def _with_headers(handler: Handler, *, page: bool) -> Handler:
    """``handler`` whose every answer, raised or returned, has the security headers;
    an API error aiohttp raises as text becomes the JSON envelope."""

    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and not page and exc.content_type != "application/json":
                return secure_headers(error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason))
            secure_headers(exc)
            raise
        except Exception:
            route = request.match_info.route.resource
            _LOGGER.exception("inbox request %s %s failed", request.method, route.canonical if route else "?")
            message = "the request failed inside wahub; the log has the details"
            return secure_headers(_refused(page, 500, "internal_error", message))
        return secure_headers(response)

    return answered


def _refused(page: bool, status: int, code: str, message: str) -> web.Response:
    if page:
        return web.Response(text=_error_page(message), status=status, content_type="text/html")
    return error(status, code, message)


def _error_page(message: str) -> str:
    return _render(
        "login.html",
        notice=f'<p class="error" role="alert">{escape(message)}</p>',
        csrf="",
        next="/inbox",
        name="",
    )


# -- origin and CSRF ---------------------------------------------------------


def _cross_origin(inbox: Inbox, request: web.Request, *, always: bool = False) -> str | None:
    """Why the request is refused as coming from another origin, or None.
    Only methods that change something are checked, unless ``always``."""
    if request.method in ("GET", "HEAD") and not always:
        return None
    given = request.headers.get("Origin") or request.headers.get("Referer")
    if not given or given == "null":
        return "the request names no origin (no Origin or Referer header): it is refused"
    parts = urlsplit(given)
    if not parts.scheme or not parts.netloc:
        return f"the request's origin {given!r} is not a URL: it is refused"
    if parts.netloc.lower() == request.host.lower():
        return None
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    if origin in inbox.config["origins"]:
        return None
    return f"requests from {origin} are refused: add it to inbox.origins if the inbox is served there"


def _csrf_matches(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


# -- sign-in -----------------------------------------------------------------


def store_of(inbox: Inbox) -> OperatorStore:
    return inbox.hub.storage.operators


def passwords_of(inbox: Inbox) -> Passwords:
    passwords = inbox.hub.state.get(_PASSWORDS_KEY)
    if not isinstance(passwords, Passwords):
        passwords = inbox.hub.state[_PASSWORDS_KEY] = Passwords()
    return passwords


def _client(inbox: Inbox, request: web.Request) -> Client:
    """Who sent ``request``, believing ``inbox.trusted_proxies`` only."""
    return client_of(request, trusted_networks(inbox.config["trusted_proxies"]))


def _secure_cookies(inbox: Inbox, client: Client) -> bool:
    return client.secure or inbox.config["secure_cookies"] == "always"


def _expiry(inbox: Inbox, created_at: float, now: float) -> float:
    idle = float(inbox.config["session_idle_hours"]) * 3600
    return min(now + idle, created_at + float(inbox.config["session_days"]) * 86400)


def _next_path(given: Any) -> str:
    """``given`` when it is a path under /inbox (never another site, never the sign-in page), else /inbox."""
    if not isinstance(given, str) or len(given) > 2000 or "\\" in given or not given.isprintable():
        return "/inbox"
    parts = urlsplit(given)
    path = parts.path
    if parts.scheme or parts.netloc or given.startswith("//") or not (path == "/inbox" or path.startswith("/inbox/")):
        return "/inbox"
    return "/inbox" if path.startswith(LOGIN_PATH) else given


def _lock_message(until: float, now: float) -> str:
    minutes = max(1, round((until - now) / 60))
    at = datetime.fromtimestamp(until, UTC).strftime("%H:%M")
    wait = f"in {minutes} minute{'s' if minutes != 1 else ''}"
    return f"too many failed sign-ins: try again {wait} (at {at} UTC)"


def slow_delay(failures: int, slow_after: int) -> float:
    """How long the answer to a failed sign-in waits, with ``failures`` counted."""
    past = failures - slow_after
    if past <= 0:
        return 0.0
    return float(min(SLOW_FIRST * 2 ** (past - 1), SLOW_MOST))


async def _sign_in(inbox: Inbox, request: web.Request) -> web.StreamResponse:
    refusal = _cross_origin(inbox, request)
    if refusal is not None:
        return await _login_page(inbox, request, status=403, reason=refusal)
    form = await request.post()
    name = str(form.get("name", "")).strip().lower()
    password = str(form.get("password", ""))
    next_path = _next_path(form.get("next"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not _csrf_matches(str(form.get("csrf", "")), expected):
        reason = "the sign-in form had expired (or cookies are off): try again"
        return await _login_page(inbox, request, status=403, reason=reason, name=name, next_path=next_path)
    settings = inbox.config["sign_in"]
    now = inbox.hub.clock.time()
    client = _client(inbox, request)
    keys = [f"account:{name[:64]}", f"address:{throttle_address(client.address)[:64]}"]
    store = store_of(inbox)
    lock_seconds = float(settings["lock_minutes"]) * 60
    # The attempt is counted before its password is checked: of attempts made at
    # once, only those that found no lock get their password checked.
    attempts = await store.reserve_attempt(
        keys,
        now=now,
        window=lock_seconds,
        lock_after={"account": int(settings["lock_after"]), "address": int(settings["address_lock_after"])},
        lock_seconds=lock_seconds,
    )
    held = [float(a.throttle.locked_until or now) for a in attempts if a.was_locked]
    if held:
        return await _locked_page(inbox, request, max(held), now, name, next_path)
    credentials = await store.credentials(name) if name_problem(name) is None else None
    stored_hash = credentials[1] if credentials is not None else None
    if await passwords_of(inbox).verify(stored_hash, password[:1024]) and credentials is not None:
        await store.clear_failures(keys[0])
        await store.forget_attempt(attempts[1])
        operator = credentials[0]
        if operator.disabled:
            reason = f"the operator {operator.name} is disabled: ask an admin to enable it"
            return await _login_page(inbox, request, status=403, reason=reason, next_path=next_path)
        return await _start_session(inbox, request, operator, next_path)
    locked_now = [a.throttle for a in attempts if a.locked_now]
    for throttle in locked_now:
        _log_lock(throttle, client.address)
    if locked_now:
        until = max(float(t.locked_until or now) for t in locked_now)
        return await _locked_page(inbox, request, until, now, name, next_path)
    await asyncio.sleep(slow_delay(max(a.throttle.failures for a in attempts), int(settings["slow_after"])))
    reason = "wrong name or password"
    return await _login_page(inbox, request, status=401, reason=reason, name=name, next_path=next_path)


def _log_lock(throttle: Throttle, address: str) -> None:
    kind, _, subject = throttle.key.partition(":")
    until = datetime.fromtimestamp(throttle.locked_until or 0, UTC).strftime("%H:%M:%S UTC")
    _LOGGER.warning(
        "inbox sign-in: %s %s locked until %s after %d failed sign-ins (the last from %s)",
        kind,
        subject,
        until,
        throttle.failures,
        address,
    )


async def _locked_page(
    inbox: Inbox, request: web.Request, until: float, now: float, name: str, next_path: str
) -> web.StreamResponse:
    response = await _login_page(
        inbox, request, status=429, reason=_lock_message(until, now), name=name, next_path=next_path
    )
    response.headers["Retry-After"] = str(max(1, int(until - now + 0.999)))
    return response


async def _start_session(inbox: Inbox, request: web.Request, operator: Operator, next_path: str) -> web.StreamResponse:
    token = secrets.token_urlsafe(32)
    now = inbox.hub.clock.time()
    client = _client(inbox, request)
    await store_of(inbox).start_session(
        operator.id,
        token_hash(token),
        secrets.token_urlsafe(32),
        address=client.address,
        user_agent=request.headers.get("User-Agent"),
        now=now,
        expires_at=_expiry(inbox, now, now),
    )
    _LOGGER.info("inbox: %s signed in from %s", operator.name, client.address)
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(float(inbox.config["session_days"]) * 86400),
        path="/inbox",
        httponly=True,
        samesite="Strict",
        secure=_secure_cookies(inbox, client),
    )
    response.del_cookie(LOGIN_COOKIE, path="/inbox")
    raise response


async def _login_page(
    inbox: Inbox,
    request: web.Request,
    *,
    status: int,
    reason: str | None = None,
    name: str = "",
    next_path: str = "/inbox",
) -> web.Response:
    """The sign-in form, with a fresh form token in its cookie and its hidden field."""
    csrf = secrets.token_urlsafe(32)
    notices = []
    if reason:
        notices.append(f'<p class="error" role="alert">{escape(reason)}</p>')
    if not await store_of(inbox).all():
        notices.append(
            '<p class="setup">No operator exists yet. Create the first one on the server with '
            f"<code>{escape('wahub operators add NAME --admin')}</code>, then sign in here.</p>"
        )
    html = _render("login.html", notice="\n".join(notices), csrf=csrf, next=next_path, name=name)
    response = web.Response(text=html, status=status, content_type="text/html")
    response.set_cookie(
        LOGIN_COOKIE,
        csrf,
        max_age=LOGIN_COOKIE_SECONDS,
        path="/inbox",
        httponly=True,
        samesite="Strict",
        secure=_secure_cookies(inbox, _client(inbox, request)),
    )
    return response


def _render(template: str, *, notice: str, **values: str) -> str:
    """``template`` from the inbox's web files, with ``notice`` (HTML already
    escaped) and every other value escaped."""
    text = Template((WEB_DIR / template).read_text(encoding="utf-8"))
    return text.substitute(notice=notice, **{key: escape(value) for key, value in values.items()})
