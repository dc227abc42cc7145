"""The webhook crm: backend: every event, signed per Standard Webhooks, POSTed
to a URL the integrator chose.

::

    crm:
      - platform: webhook
        name: shop
        url: https://shop.example.com/wahub-events
        secret: !secret shop_webhook_secret     # whsec_...; a list while rotating
        events: ["message.*", "contact.*"]      # default: every type

The body is the event (``{"type", "timestamp", "data"}``) as compact JSON;
``webhook-id`` is the event's id, the same on every attempt and so the
receiver's idempotency key. A 2xx answer is a success; 410 Gone disables the
entry until ``wahub deliveries enable NAME``; anything else (another status,
a redirect, which is never followed, no answer within ``timeout``, a
connection that fails, an address that is not public) is retried on the
Standard Webhooks schedule, not before the ``Retry-After`` the receiver gave.
The full description is in docs/integrations/webhooks.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import voluptuous as vol
from yarl import URL

from wahub import __version__, hookimpl
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.crm import CRM_SCHEMA_BASE, CRMBackend, CRMHost, retry_after_seconds
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent
from wahub.plugins.crm.ssrf import AddressRefused, GuardedResolver, article, literal_address, literal_refusal
from wahub.plugins.crm.webhook_signing import signed_headers, signing_key, webhook_secrets

_LOGGER = logging.getLogger(__name__)

#: How much of an error answer's body is read for the reason.
ANSWER_EXCERPT = 4096
#: Headers wahub writes itself; ``headers:`` may not set them.
_OWN_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding"}
    | {"webhook-id", "webhook-timestamp", "webhook-signature"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def endpoint_url(value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host and no credentials."""
    if not isinstance(value, str):
        raise vol.Invalid("expected an http:// or https:// URL")
    try:
        url = URL(value)
    except ValueError as exc:
        raise vol.Invalid(f"not a URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise vol.Invalid("expected an http:// or https:// URL")
    if not url.host:
        raise vol.Invalid("the URL has no host")
    if url.user is not None or url.password is not None:
        raise ExplainedInvalid(
            "the URL carries credentials (user:password@); send them as a header instead "
            "(headers: {Authorization: ...}), so they stay out of logs and delivery listings"
        )
    return value


def extra_headers(value: Any) -> dict[str, str]:
    """Static headers sent with every request: names and values as text,
    none of the headers wahub writes itself."""
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of header names to values")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ExplainedInvalid(f"{name!r} is not a header name (letters, digits and -)", path=[name])
        if name.lower() in _OWN_HEADERS:
            raise ExplainedInvalid(f"{name} is written by wahub itself and cannot be set here", path=[name])
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ExplainedInvalid("expected the header's value as text", path=[name])
        if any(char in str(text) for char in "\r\n\0"):
            raise ExplainedInvalid("a header value cannot hold line breaks", path=[name])
        headers[name] = str(text) if not isinstance(text, str) else text
    return headers


def shown_url(url: URL) -> str:
    """The URL as messages show it: without its query, which may carry a token."""
    return str(url.with_query(None).with_fragment(None))


def _public_endpoint(entry: dict[str, Any]) -> dict[str, Any]:
    """Unless ``allow_private``, a URL whose host is written as a non-public IP
    address (or is ``localhost``) is refused here, with its line; host names
    are checked at each delivery, once resolved."""
    if entry["allow_private"]:
        return entry
    url = URL(entry["url"])
    kind = literal_refusal(url.host or "")
    if kind is not None:
        raise ExplainedInvalid(
            f"{shown_url(url)} points at {article(kind)} {kind} address; event webhooks go to public "
            "addresses only: set `allow_private: true` on this entry to send to a receiver on this "
            "machine or the local network",
            path=["url"],
        )
    return entry


class WebhookBackend(CRMBackend):
    """Event webhooks per Standard Webhooks (see the module's description)."""

    PLATFORM = "webhook"
    CONFIG_SCHEMA = vol.Schema(
        vol.All(
            CRM_SCHEMA_BASE.extend(
                {
                    # Where the events are POSTed.
                    vol.Required("url"): endpoint_url,
                    # whsec_ secrets; every one signs (a rotation lists the new one beside the old).
                    vol.Required("secret"): webhook_secrets,
                    # Allow an endpoint on loopback, private, link-local or CGNAT addresses.
                    vol.Optional("allow_private", default=False): bool,
                    # Static headers sent with every request (a receiver's own API key, say).
                    vol.Optional("headers", default=dict): extra_headers,
                }
            ),
            _public_endpoint,
        )
    )
    EVENTS = ("*",)

    def __init__(self, host: CRMHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self.url = URL(config["url"])
        self.keys = [signing_key(secret) for secret in config["secret"]]
        self.allow_private: bool = config["allow_private"]
        self.headers: dict[str, str] = dict(config["headers"])
        self.timeout = float(config["timeout"])
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the backend's own HTTP session: its resolver checks every address."""
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self.allow_private),
            use_dns_cache=False,
            limit=int(self.config["concurrency"]),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": f"wahub/{__version__}"},
            trust_env=False,
        )

    async def stop(self) -> None:
        """Close the session (after the deliverer drained what was in flight)."""
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def deliver(self, event: IntegrationEvent) -> None:
        """POST the event, signed; raise ``DeliveryFailed`` unless it was taken (2xx)."""
        if self.session is None:
            raise DeliveryFailed(f"the {self.name} webhook is not started")
        where = shown_url(self.url)
        self._check_literal_host()
        body = json.dumps(event.body(), separators=(",", ":")).encode()
        # The receiver checks the timestamp against its own clock (Standard Webhooks
        # allows five minutes), so it is the real time, whatever clock the daemon reads.
        headers = {
            **self.headers,
            "content-type": "application/json",
            **signed_headers(self.keys, event.id, int(time.time()), body),
        }
        try:
            async with self.session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                excerpt = await _excerpt(response)
                raise _answer_failure(where, response.status, response.headers, excerpt)
        except TimeoutError:
            raise DeliveryFailed(f"{where} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal(exc)
            if refused is not None:
                _LOGGER.warning("%s: refused to deliver %s: %s", self.name, event.id, refused)
                raise DeliveryFailed(f"refused {where}: {refused}") from None
            raise DeliveryFailed(f"cannot connect to {where}: {exc.os_error or exc}") from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{where} failed: {type(exc).__name__}: {exc}") from None

    def _check_literal_host(self) -> None:
        """A host written as an IP address is not resolved, so it is checked here."""
        if self.allow_private or literal_address(self.url.host or "") is None:
            return
        kind = literal_refusal(self.url.host or "")
        if kind is not None:
            refused = AddressRefused(self.url.host or "", self.url.host or "", kind)
            _LOGGER.warning("%s: refused to deliver: %s", self.name, refused)
            raise DeliveryFailed(f"refused {shown_url(self.url)}: {refused}")


def _refusal(exc: aiohttp.ClientConnectorError) -> AddressRefused | None:
    """The address check that refused the connection, if that is why it failed."""
    for cause in (exc.os_error, exc.__cause__):
        if isinstance(cause, AddressRefused):
            return cause
    return None


async def _excerpt(response: aiohttp.ClientResponse) -> str:
    """The start of an error answer's body, as text on one line."""
    try:
        head = await response.content.read(ANSWER_EXCERPT)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    return " ".join(head.decode("utf-8", "replace").split())[:300]


def _answer_failure(where: str, status: int, headers: Mapping[str, str], excerpt: str) -> DeliveryFailed:
    """What an answer other than 2xx means: 410 disables the entry; anything
    else is retried (Standard Webhooks retries every failure)."""
    said = f": {excerpt}" if excerpt else ""
    if status == 410:
        return DeliveryFailed(f"{where} answered 410 Gone{said}", status=status, gone=True)
    if 300 <= status < 400:
        location = headers.get("Location")
        to = f" to {shown_url(URL(location))}" if location else ""
        return DeliveryFailed(
            f"{where} answered {status}, a redirect{to}: redirects are not followed, set the entry's url "
            "to the address that answers",
            status=status,
        )
    return DeliveryFailed(
        f"{where} answered {status}{said}", status=status, retry_after=retry_after_seconds(headers.get("Retry-After"))
    )


@hookimpl
def register_crm_backends() -> Iterable[type[CRMBackend]]:
    return [WebhookBackend]
