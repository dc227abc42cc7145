"""A fake of Twilio's cloud for a WhatsApp sender: the Messages API, inbound
media behind the account's credentials, the Content API
(``fake_twilio_content``), and webhooks signed as Twilio signs them.

- every request needs HTTP Basic credentials, the account SID and auth token
  or an API key of the account (``api_keys``), or gets Twilio's 401 body
  (code 20003);
- a send is a form: ``To`` and ``From`` (or ``MessagingServiceSid``) are
  checked, and ``Body`` (at most 1600 characters), ``MediaUrl``, or a known
  ``ContentSid`` with ``ContentVariables`` (a JSON object of strings) is
  needed, refused with Twilio's 400 bodies; a ``MediaUrl`` is fetched, as
  Twilio fetches it, and kept in ``fetched``;
- the answer is Twilio's 201 message resource (``SM...``, ``MM...`` with
  media, ``status: queued``); statuses are posted to the daemon as forms
  signed with ``X-Twilio-Signature`` over the URL Twilio would call: the
  message's ``StatusCallback``, or the URL ``attach`` gave.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from wahub.plugins.providers.twilio.session import SESSION_TYPES
from wahub.testing.fake_bsp import FakeBSP, Sent
from wahub.testing.fake_twilio_content import ContentStore, sid, twilio_error_body

_ERRORS = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21211: "The 'To' number is not a valid phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    63016: "Failed to send freeform message because you are outside the allowed window.",
    63018: "Rate limit exceeded for Channel",
    63024: "Invalid message recipient",
    63032: "We cannot send this message to this user because of a WhatsApp limitation.",
}
_CAPTIONED = {"image", "video", "document"}


def twilio_signature(auth_token: str, url: str, fields: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature``: HMAC-SHA1 of the URL and every field (names sorted, then values)."""
    pairs = sorted(set(fields))
    digest = hmac.new(auth_token.encode(), (url + "".join(n + v for n, v in pairs)).encode(), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


@dataclass
class MediaFile:
    data: bytes
    content_type: str


@dataclass
class FakeTwilio(FakeBSP):
    """Twilio's APIs for one account and its WhatsApp sender."""

    platform: ClassVar[str] = "twilio"
    undeliverable_code: ClassVar[str] = "63024"
    account_sid: str = "AC" + "0" * 31 + "1"
    auth_token: str = "fake-twilio-auth-token-0123456789"
    sender: str = "whatsapp:+15550783881"
    messaging_service_sid: str = "MG" + "0" * 31 + "2"
    #: API keys of the account (SID to secret) that may call the API.
    api_keys: dict[str, str] = field(default_factory=lambda: {"SK" + "0" * 31 + "3": "fake-api-key-secret-0123"})
    #: Files a user sent, by media SID, behind the account's credentials.
    media: dict[str, MediaFile] = field(default_factory=dict)
    #: Every MediaUrl the fake fetched for a send: URL, status and the bytes.
    fetched: list[tuple[str, int, bytes]] = field(default_factory=list)
    content: ContentStore = field(init=False)
    _callbacks: dict[str, str] = field(default_factory=dict)
    _public_urls: dict[str, str] = field(default_factory=dict)
    _fetched_types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.content = ContentStore(self.account_sid)

    async def start(self) -> FakeTwilio:
        await super().start()
        self.content.base = self.url
        return self

    def routes(self) -> list[web.RouteDef]:
        account = "/2010-04-01/Accounts/{account}"
        return [
            web.post(account + "/Messages.json", self._send),
            web.get(account + "/Messages/{message}/Media/{media}", self._media),
            web.get("/cdn/{media}", self._cdn),
            *self.content.routes(),
        ]

    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        entry = {
            "platform": "twilio",
            "name": name,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from": self.sender,
            "api_base": self.url,
            "content_base": self.url,
        }
        return {**entry, **extra}

    def attach(self, daemon_url: str, name: str = "main", *, public_url: str | None = None) -> None:
        """Post webhooks of ``name`` to the daemon; signed for ``public_url`` (the
        URL Twilio is configured with, in front of a proxy) when given."""
        super().attach(daemon_url, name)
        if public_url is not None:
            self._public_urls[name] = public_url

    def signed_url(self, name: str = "main") -> str:
        """The URL Twilio signs a webhook of ``name`` for."""
        return self._public_urls.get(name) or self.webhook_url(name)

    async def send_webhook(
        self, body: bytes, headers: dict[str, str] | None = None, *, name: str = "main", signed: bool = True
    ) -> aiohttp.ClientResponse:
        """POST ``body`` to the daemon, signed over ``signed_url`` (a status over its ``StatusCallback``)."""
        assert self._http is not None, "start the fake first"
        headers = dict(headers or {})
        if signed:
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
            url = self._callbacks.get(fields.get("MessageSid", ""), self.signed_url(name))
            headers.update(self.sign(url, body, headers))
        async with self._http.post(self.webhook_url(name), data=body, headers=headers) as response:
            await response.read()
            return response

    # -- webhooks ------------------------------------------------------------

    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {"X-Twilio-Signature": twilio_signature(self.auth_token, url, fields)}

    def inbound_form(self, user: str, **fields: str) -> tuple[bytes, dict[str, str]]:
        """A message from ``user`` (digits) with Twilio's fields and ``fields`` over them."""
        message_sid = fields.pop("MessageSid", None) or sid("SM")
        form = {
            "SmsMessageSid": message_sid,
            "NumMedia": "0",
            "SmsSid": message_sid,
            "SmsStatus": "received",
            "To": self.sender,
            "NumSegments": "1",
            "MessageSid": message_sid,
            "AccountSid": self.account_sid,
            "From": f"whatsapp:+{user}",
            "ApiVersion": "2010-04-01",
            "WaId": user,
            "MessageType": "text",
            "Body": "",
            **fields,
        }
        return urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}

    def inbound_text(self, user: str, text: str, *, profile: str = "Ana") -> tuple[bytes, dict[str, str]]:
        return self.inbound_form(user, Body=text, ProfileName=profile)

    def inbound_media(
        self, user: str, data: bytes, content_type: str, *, caption: str = ""
    ) -> tuple[bytes, dict[str, str]]:
        """A user's file: kept behind the credentials, its MediaUrl0 in the form."""
        message_sid, media_sid = sid("MM"), sid("ME")
        self.media[media_sid] = MediaFile(data, content_type)
        url = f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/{media_sid}"
        kind = content_type.partition("/")[0]
        fields = {"MessageSid": message_sid, "NumMedia": "1", "MediaUrl0": url, "MediaContentType0": content_type}
        return self.inbound_form(
            user, Body=caption, MessageType=kind if kind != "application" else "document", **fields
        )

    def status_webhook(self, sent: Sent, status: str, *, error: str | None = None) -> tuple[bytes, dict[str, str]]:
        form = {
            "ChannelPrefix": "whatsapp",
            "ApiVersion": "2010-04-01",
            "MessageStatus": status,
            "SmsSid": sent.provider_id,
            "SmsStatus": status,
            "ChannelInstallSid": "XE" + "0" * 32,
            "To": f"whatsapp:+{sent.to}",
            "From": self.sender,
            "MessageSid": sent.provider_id,
            "AccountSid": self.account_sid,
            "ChannelToAddress": f"+{sent.to}",
        }
        if error is not None:
            form["ErrorCode"] = error
        return urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}

    def error_answer(self, status: int, code: str | None) -> web.Response:
        """Twilio's error body with ``code`` (None: its generic code for ``status``)."""
        number = int(code) if code and code.isdigit() else {401: 20003, 429: 20429}.get(status, 20500)
        return twilio_error_body(status, number, _ERRORS.get(number, "The request was refused"))

    # -- the API -------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        secret = self.auth_token if user == self.account_sid else self.api_keys.get(user)
        return secret is not None and hmac.compare_digest(secret.encode(), password.encode())

    def _refused(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            return twilio_error_body(401, 20003, "Authenticate")
        if request.match_info.get("account", self.account_sid) != self.account_sid:
            return twilio_error_body(401, 20003, "Authenticate")
        return None

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/cdn/"):
            refused = self._refused(request)
            if refused is not None:
                self.calls.append(f"{request.method} {request.path}")
                return refused
        return await super()._gate(request, handler)

    async def _send(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = [(key, str(value)) for key, value in form.items()]
        problem = self._form_problem(fields)
        if problem is not None:
            return twilio_error_body(400, *problem)
        first = dict(fields)
        media_urls = [value for key, value in fields if key == "MediaUrl"]
        for url in media_urls:
            if not await self._fetch(url):
                return twilio_error_body(400, 21620, f"Media urls: {url} are invalid")
        message_sid = sid("MM" if media_urls else "SM")
        if first.get("StatusCallback"):
            self._callbacks[message_sid] = first["StatusCallback"]
        kind, text = self._kind(first, media_urls)
        to = first["To"].removeprefix("whatsapp:+")
        body = {key: [v for k, v in fields if k == key] if key == "MediaUrl" else value for key, value in first.items()}
        self.accepted(Sent(message_sid, to, kind, text, body))
        answer = {
            "sid": message_sid,
            "account_sid": self.account_sid,
            "status": "queued",
            "to": first["To"],
            "from": first.get("From") or None,
            "messaging_service_sid": first.get("MessagingServiceSid"),
            "body": first.get("Body", ""),
            "num_media": str(len(media_urls)),
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "price": None,
            "date_created": "Thu, 01 Jan 2026 00:00:00 +0000",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}.json",
        }
        return web.json_response(answer, status=201)

    def _form_problem(self, fields: list[tuple[str, str]]) -> tuple[int, str] | None:
        first = dict(fields)
        to = first.get("To", "")
        if not to:
            return 21604, "A 'To' phone number is required."
        if not to.startswith("whatsapp:+") or not to[10:].isdigit():
            return 21211, f"Invalid 'To' Phone Number: {to}"
        service = first.get("MessagingServiceSid")
        if service is not None and service != self.messaging_service_sid:
            return 21701, "The Messaging Service Sid is invalid."
        if service is None and first.get("From") != self.sender:
            return 63007, "Twilio could not find a Channel with the specified From address"
        if not (first.get("Body") or "MediaUrl" in first or first.get("ContentSid")):
            return 21619, "A text message body or media url must be specified."
        if len(first.get("Body", "")) > 1600:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        if "ContentSid" in first and first["ContentSid"] not in self.content.contents:
            return 21655, "The ContentSid is Invalid."
        if "ContentVariables" in first:
            try:
                variables = json.loads(first["ContentVariables"])
            except ValueError:
                variables = None
            if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
                return 21656, "The ContentVariables Parameter is invalid."
        action = first.get("PersistentAction", "")
        if action and not action.startswith(("geo:", "mailto:", "tel:", "sms:")):
            return 21210, "PersistentAction is invalid."
        return None

    def _kind(self, first: dict[str, str], media_urls: list[str]) -> tuple[str, str]:
        if first.get("ContentSid"):
            content = self.content.contents[first["ContentSid"]]
            if first["ContentSid"] not in self.content.approvals and set(content["types"]) <= SESSION_TYPES:
                # Quick replies and list pickers go in a session without approval.
                return "interactive", str(next(iter(content["types"].values()))["body"])
            return "template", str(content["friendly_name"])
        if first.get("PersistentAction", "").startswith("geo:"):
            return "location", first.get("Body", "")
        if media_urls:
            mime = self._fetched_types.get(media_urls[0], "")
            family = mime.partition("/")[0]
            kind = family if family in ("image", "video", "audio") else "document"
            return ("sticker" if mime == "image/webp" else kind), first.get("Body", "")
        return "text", first.get("Body", "")

    async def _fetch(self, url: str) -> bool:
        """Fetch a MediaUrl as Twilio does: without credentials; it must answer 200 with a Content-Type."""
        assert self._http is not None
        try:
            async with self._http.get(url) as response:
                data = await response.read()
                self.fetched.append((url, response.status, data))
                self._fetched_types[url] = response.content_type
                return response.status == 200 and bool(response.content_type)
        except aiohttp.ClientError:
            self.fetched.append((url, 0, b""))
            return False

    async def _media(self, request: web.Request) -> web.StreamResponse:
        media_sid = request.match_info["media"]
        if media_sid not in self.media:
            return twilio_error_body(404, 20404, "The requested resource was not found")
        # Twilio answers a media request with a redirect to the file on its CDN.
        raise web.HTTPTemporaryRedirect(f"/cdn/{media_sid}")

    async def _cdn(self, request: web.Request) -> web.Response:
        found = self.media.get(request.match_info["media"])
        if found is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=found.data, content_type=found.content_type)
