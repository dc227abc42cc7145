"""A fake of Vonage's Messages API v1 for WhatsApp, on a real socket (``FakeVonage``).

It answers as Vonage does:

- ``POST /v1/messages``: the credentials checked (an RS256 application JWT
  verified with the application's public key, its ``application_id``, expiry
  and a ``jti`` never seen before; or HTTP Basic with the API key and secret),
  the body checked (``fake_vonage_checks``), answered ``202 {"message_uuid"}``.
  A media message's URL is fetched first, as Vonage fetches it; one that
  cannot be fetched is ``rejected`` (1380) in its status webhook.
- ``PATCH /v1/messages/{message_uuid}`` ``{"status": "read"}`` marks an inbound
  message read (``reads``); an unknown one is 404.
- ``GET /v3/media/{id}`` serves inbound files (``add_media``) behind the same credentials.

Webhooks go to the daemon signed as Vonage signs them: ``Authorization:
Bearer <JWT>``, HS256 with the signature secret, claims ``iat``, ``jti``,
``iss``, ``api_key``, ``application_id`` and ``payload_hash`` (hex SHA-256 of
the body). Refusals are Vonage's RFC 7807 problems.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wahub.testing.fake_bsp import FakeBSP, Sent
from wahub.testing.fake_vonage_checks import (
    ERRORS_URL,
    TITLES,
    body_problems,
    coded,
    invalid,
    problem,
    throttled,
    unauthorized,
)

#: Shared statuses and Vonage's words for them.
VONAGE_STATUSES = {"sent": "submitted", "delivered": "delivered", "read": "read", "failed": "undeliverable"}
_CANONICAL_KINDS = {"file": "document"}


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class FakeVonage(FakeBSP):
    platform: ClassVar[str] = "vonage"
    undeliverable_code: ClassVar[str] = "1260"

    application_id: str = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    api_key: str = "abcd1234"
    api_secret: str = "fake-api-secret-0123"
    signature_secret: str = "fake-signature-secret-0123456789abcdef"
    #: The business's WhatsApp number.
    number: str = "14157386102"
    #: Which credentials ``provider_entry`` gives: ``jwt`` (the application) or ``basic``.
    auth: str = "jwt"
    #: Inbound message uuids marked read, in order.
    reads: list[str] = field(default_factory=list)
    #: Outbound media URLs fetched: (url, HTTP status, the bytes).
    fetched: list[tuple[str, int, bytes]] = field(default_factory=list)
    #: Inbound files served at ``/v3/media/{id}``: id -> (bytes, content type).
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: Media downloads refused for want of credentials.
    refused_downloads: int = 0
    private_key: rsa.RSAPrivateKey = field(default_factory=_new_key)
    _inbound_ids: set[str] = field(default_factory=set)
    _jtis: set[str] = field(default_factory=set)

    # -- configuration -------------------------------------------------------

    @property
    def private_key_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def rotate_keys(self) -> None:
        """The application gets a new key pair: tokens signed with the old key are refused."""
        self.private_key = _new_key()

    def provider_entry(self, name: str = "main", **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "platform": "vonage",
            "name": name,
            "signature_secret": self.signature_secret,
            # The account's key names it in signed webhooks (claim api_key), whatever the credentials.
            "api_key": self.api_key,
            "from": self.number,
            "api_base": self.url,
        }
        if self.auth == "basic":
            entry.update(api_secret=self.api_secret)
        else:
            entry.update(application_id=self.application_id, private_key=self.private_key_pem)
        return {**entry, **extra}

    # -- the API ---------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._send),
            web.patch("/v1/messages/{message_uuid}", self._mark_read),
            web.get("/v3/media/{media_id}", self._media),
        ]

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
            return hmac.compare_digest(credentials.strip().encode(), expected.encode())
        if scheme != "Bearer":
            return False
        try:
            claims = jwt.decode(
                credentials.strip(),
                self.private_key.public_key(),
                algorithms=["RS256"],
                options={"require": ["iat", "jti", "exp", "application_id"]},
            )
        except jwt.PyJWTError:
            return False
        if claims["application_id"] != self.application_id or claims["jti"] in self._jtis:
            return False
        self._jtis.add(str(claims["jti"]))
        return True

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return unauthorized()
        try:
            body = json.loads(await request.read())
        except ValueError:
            return problem(400, f"{ERRORS_URL}#bad-request", "Bad Request", "The request body is not valid JSON")
        problems = body_problems(body, self.number)
        if problems:
            return invalid(problems)
        message_uuid = str(uuid.uuid4())
        sent = Sent(message_uuid, body["to"], *_kind_and_text(body), body=body)
        kind = body["message_type"]
        media = body[kind] if kind in ("image", "audio", "video", "file", "sticker") else {}
        if "url" in media and not await self._fetch(media["url"]):
            self.sent.append(sent)
            self._later(self.post_status(sent, "failed", error="1380"))
            return web.json_response({"message_uuid": message_uuid}, status=202)
        self.accepted(sent)
        return web.json_response({"message_uuid": message_uuid}, status=202)

    async def _fetch(self, url: str) -> bool:
        """Fetch a media URL as Vonage does, without credentials; whether it worked."""
        assert self._http is not None
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                data = await response.read()
                self.fetched.append((url, response.status, data))
                return response.status == 200 and bool(data)
        except (aiohttp.ClientError, TimeoutError):
            self.fetched.append((url, 0, b""))
            return False

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_read(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return unauthorized()
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if body != {"status": "read"}:
            return invalid([("status", "must be read")])
        message_uuid = request.match_info["message_uuid"]
        if message_uuid not in self._inbound_ids:
            return problem(404, f"{ERRORS_URL}#not-found", "Not Found", f"Message {message_uuid} was not found")
        self.reads.append(message_uuid)
        return web.Response(status=200)

    async def _media(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.refused_downloads += 1
            return unauthorized()
        found = self.media.get(request.match_info["media_id"])
        if found is None:
            return problem(404, f"{ERRORS_URL}#not-found", "Not Found", "The media file was not found")
        return web.Response(body=found[0], content_type=found[1])

    def add_media(self, data: bytes, content_type: str) -> str:
        """Keep an inbound file; returns the URL Vonage's webhook gives for it."""
        media_id = str(uuid.uuid4())
        self.media[media_id] = (data, content_type)
        return f"{self.url}/v3/media/{media_id}"

    def error_answer(self, status: int, code: str | None) -> web.Response:
        if status == 401:
            return unauthorized()
        if code is not None:
            return coded(status, code)
        if status == 429:
            return throttled()
        if status >= 500:
            return problem(status, f"{ERRORS_URL}#internal-error", "Internal Server Error", "Please retry later")
        return coded(status, "1150", "The request was refused")

    # -- webhooks ----------------------------------------------------------------

    def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        claims = {
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "api_key": self.api_key,
            "application_id": self.application_id,
            "payload_hash": hashlib.sha256(body).hexdigest(),
        }
        return {"Authorization": "Bearer " + jwt.encode(claims, self.signature_secret, algorithm="HS256")}

    def inbound(
        self, user: str, message_type: str, payload: dict[str, Any], **extra: Any
    ) -> tuple[bytes, dict[str, str]]:
        """A user's message of ``message_type`` (``payload`` holds its object and
        the rest of the callback's keys) as Vonage's inbound webhook."""
        message_uuid = str(extra.pop("message_uuid", uuid.uuid4()))
        self._inbound_ids.add(message_uuid)
        data = {
            "channel": "whatsapp",
            "message_uuid": message_uuid,
            "to": self.number,
            "from": user,
            "timestamp": _now(),
            "message_type": message_type,
            **payload,
            **extra,
        }
        return json.dumps(data).encode(), {"Content-Type": "application/json"}

    def inbound_text(self, user: str, text: str, *, profile: str = "Ana") -> tuple[bytes, dict[str, str]]:
        return self.inbound(user, "text", {"text": text, "profile": {"name": profile}, "context_status": "none"})

    def status_webhook(self, sent: Sent, status: str, *, error: str | None = None) -> tuple[bytes, dict[str, str]]:
        word = VONAGE_STATUSES[status]
        data: dict[str, Any] = {
            "message_uuid": sent.provider_id,
            "to": sent.to,
            "from": self.number,
            "timestamp": _now(),
            "status": word,
            "channel": "whatsapp",
        }
        if status == "failed":
            code = error or self.undeliverable_code
            data["error"] = {
                "type": f"https://developer.vonage.com/api-errors/messages#{code}",
                "title": code,
                "detail": TITLES.get(code, "The message could not be delivered"),
                "instance": secrets.token_hex(16),
            }
        if status == "delivered":
            data["usage"] = {"currency": "EUR", "price": "0.0333"}
            data["whatsapp"] = {"pricing": {"type": "regular", "category": "service", "pricing_model": "PMP"}}
        return json.dumps(data).encode(), {"Content-Type": "application/json"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _kind_and_text(body: dict[str, Any]) -> tuple[str, str]:
    """A send's canonical kind and what a person reads of it."""
    kind = body["message_type"]
    value: Any = body[kind]
    if kind == "text":
        return "text", str(value)
    if kind == "custom":
        inner_kind = str(value["type"])
        inner = value[inner_kind]
        if inner_kind == "template":
            return "template", str(inner.get("name", ""))
        if inner_kind == "interactive":
            return "interactive", str((inner.get("body") or {}).get("text", ""))
        return inner_kind, str(inner.get("name", "")) if isinstance(inner, dict) else ""
    if kind == "reaction":
        return "reaction", str(value.get("emoji", ""))
    if kind == "template":
        return "template", str(value.get("name", ""))
    return _CANONICAL_KINDS.get(kind, kind), str(value.get("caption", "")) if isinstance(value, dict) else ""
