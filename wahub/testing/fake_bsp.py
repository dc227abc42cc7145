"""What every fake provider cloud in ``wahub.testing`` offers, so one engine
suite runs against each of them (``tests/plugins/providers/test_bsp_engine.py``).

A fake is an HTTP server on 127.0.0.1 that answers as the provider's API does
(its auth checked, its request bodies validated, its answers and error bodies)
and posts webhooks to the daemon signed as the provider signs them. Tests talk
to every fake in the same words:

- ``provider_entry(name)``: the ``providers:`` entry pointing the provider at
  the fake; ``attach(daemon_url, name)``: where its webhooks go (the entry's
  ``public_base_url`` is the daemon's URL);
- ``send_inbound(user, text)``: a user's text message, as the provider's
  inbound webhook; ``send_webhook(body)``: any body, signed (an exact fixture);
- ``sent``: every message the fake accepted, in the provider-neutral ``Sent``
  form; after each, the fake posts ``delivered`` and then ``read`` status
  webhooks unless ``statuses`` is off, and ``post_status`` posts one on demand;
- ``fail_next`` and ``fail_for`` (from ``InjectsFaults``): answer with an
  error status, or with the provider's own error ``code`` in its error body.
"""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback
from wahub.testing.fake_faults import Fault, Faults, InjectsFaults


@dataclass
class Sent:
    """A message the fake accepted, in words every provider shares."""

    #: The provider's id of it (what its status webhooks name).
    provider_id: str
    #: The recipient as digits (E.164 without ``+``).
    to: str
    #: The canonical kind: text, image, template, interactive, location...
    kind: str
    #: What a person reads of it (a text's body, a caption, a template's name).
    text: str = ""
    #: The request body as the provider received it (JSON, or the form's fields).
    body: Any = None


@dataclass
class FakeBSP(InjectsFaults, abc.ABC):
    """Base of the fake provider clouds; a subclass adds its API's routes in
    ``routes`` and its webhook formats in the abstract methods."""

    #: The ``platform:`` of the provider the fake stands for.
    platform: ClassVar[str]
    #: The provider's error code of a message that could not be delivered
    #: (what a ``failed`` status webhook carries in ``post_status``).
    undeliverable_code: ClassVar[str]
    #: Whether the provider's webhook signature covers the body (a provider that
    #: only sends a credential with each webhook, as Infobip does, cannot).
    signs_body: ClassVar[bool] = True
    #: Post delivered then read statuses after every accepted send.
    statuses: bool = True
    #: Seconds every API request is held before it is answered.
    latency: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    #: Every request the fake received, as ``"METHOD /path"``.
    calls: list[str] = field(default_factory=list)
    url: str = ""
    _faults: Faults = field(default_factory=Faults)
    _down_until: float = 0.0
    _down_status: int = 503
    _webhook_urls: dict[str, str] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _answering: int = 0
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> FakeBSP:
        app = web.Application(middlewares=[self._gate], client_max_size=64 * 2**20)
        app.router.add_routes(self.routes())
        self._runner, self.url = await serve_on_loopback(app)
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        await close_fake(self._runner, self._http, self._tasks)

    async def __aenter__(self) -> FakeBSP:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what a subclass gives ---------------------------------------------

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The API's routes (sends, media, templates...)."""

    @abc.abstractmethod
    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        """The ``providers:`` entry of a provider using this fake."""

    @abc.abstractmethod
    def inbound_text(self, user: str, text: str, *, profile: str = "Ana") -> tuple[bytes, dict[str, str]]:
        """A user's text message as the provider's webhook body, and its
        headers (content type; the signature is added by ``send_webhook``)."""

    @abc.abstractmethod
    def status_webhook(self, sent: Sent, status: str, *, error: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A status webhook for ``sent`` in the provider's words for the shared
        ``status`` (``delivered``, ``read``, ``failed`` with the provider's
        ``error`` code), with its headers."""

    @abc.abstractmethod
    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """The headers that sign ``body`` posted to ``url``, as the provider signs."""

    @abc.abstractmethod
    def error_answer(self, status: int, code: str | None) -> web.Response:
        """The provider's error answer with its own error ``code`` (None: its
        generic one for ``status``)."""

    # -- webhooks to the daemon --------------------------------------------

    def attach(self, daemon_url: str, name: str = "main") -> None:
        """Send the webhooks of provider entry ``name`` to the daemon at ``daemon_url``."""
        self._webhook_urls[name] = f"{daemon_url.rstrip('/')}/webhooks/{name}"

    def webhook_url(self, name: str = "main") -> str:
        return self._webhook_urls[name]

    async def send_webhook(
        self, body: bytes, headers: dict[str, str] | None = None, *, name: str = "main", signed: bool = True
    ) -> aiohttp.ClientResponse:
        """POST ``body`` to the daemon as the provider would (signed unless told
        otherwise); the response is read and released."""
        assert self._http is not None, "start the fake first"
        url = self.webhook_url(name)
        headers = dict(headers or {})
        if signed:
            headers.update(self.sign(url, body, headers))
        async with self._http.post(url, data=body, headers=headers) as response:
            await response.read()
            return response

    async def send_inbound(self, user: str, text: str, *, name: str = "main", profile: str = "Ana") -> int:
        """A user's text message posted to the daemon; the HTTP status it got."""
        body, headers = self.inbound_text(user, text, profile=profile)
        return (await self.send_webhook(body, headers, name=name)).status

    async def post_status(self, sent: Sent, status: str, *, error: str | None = None, name: str = "main") -> int:
        body, headers = self.status_webhook(sent, status, error=error)
        return (await self.send_webhook(body, headers, name=name)).status

    def accepted(self, sent: Sent, name: str = "main") -> None:
        """Record an accepted send; a subclass calls it from its send route."""
        self.sent.append(sent)
        if self.statuses and name in self._webhook_urls:
            task = asyncio.get_running_loop().create_task(self._report(sent, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _report(self, sent: Sent, name: str) -> None:
        for status in ("delivered", "read"):
            await self.post_status(sent, status, name=name)

    async def settle(self) -> None:
        """Wait until the fake has answered every request it took (a request from
        a daemon killed since included) and every status webhook it started has
        been answered."""
        while self._tasks or self._answering:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0.01)

    # -- faults --------------------------------------------------------------

    def fail_for(self, seconds: float, *, status: int = 503) -> None:
        """Answer every API request with ``status`` for ``seconds``."""
        self._down_until, self._down_status = time.monotonic() + seconds, status

    def refuse_next(self, code: str, *, status: int = 400, times: int = 1) -> None:
        """Refuse the next ``times`` POST requests (sends) with the provider's error ``code``."""
        self._faults.add(Fault(status, match=f"code:{code}"), times)

    def heal(self) -> None:
        self._down_until = 0.0
        self._faults.waiting.clear()

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        self._answering += 1
        try:
            return await self._answer(request, handler)
        finally:
            self._answering -= 1

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        if time.monotonic() < self._down_until:
            return self.error_answer(self._down_status, None)
        coded = next((f for f in self._faults.waiting if f.match and f.match.startswith("code:")), None)
        if coded is not None and request.method == "POST":
            self._faults.waiting.remove(coded)
            return self.error_answer(coded.status, (coded.match or "")[len("code:") :])
        fault = self._faults.take(request.method, request.path)
        if fault is not None:
            if fault.applied:
                await handler(request)
            return self.error_answer(fault.status, None)
        response: web.StreamResponse = await handler(request)
        return response
