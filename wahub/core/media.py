"""Media files: what users send, downloaded and kept; what the business sends,
uploaded once per provider and its id remembered until it expires.

Files live under ``wahub.media.directory``, named by their sha256, so the same
file is stored once. The database holds who sent each file and its type; the
REST API serves a stored file at ``/api/v1/media/{id}`` (bearer token), and
``POST /api/v1/media`` stores a file to send: a message names it with the
media id ``wahub:<id>`` and the provider uploads it when the message leaves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import logging
import mimetypes
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import voluptuous as vol

from wahub.core.models import InboundMessage
from wahub.core.storage_messages import Database, insert_ignore
from wahub.core.storage_schema import media, media_uploads

if TYPE_CHECKING:
    from wahub.core.hub import Hub

_LOGGER = logging.getLogger(__name__)

MEDIA_KINDS: tuple[str, ...] = ("image", "video", "audio", "document", "sticker")
#: Outbound media ids naming a file stored here rather than at the provider.
LOCAL_PREFIX = "wahub:"
_MB = 1024 * 1024
_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+\s*(;.*)?$")
#: Time an inbound file may take to download: well inside the time one inbox
#: event may take, so a slow file delays the message but never loses it.
FETCH_SECONDS = 40.0

#: The Cloud API's limits per kind (reference section 5).
DEFAULT_MAX_BYTES: dict[str, int] = {
    "image": 5 * _MB,
    "video": 16 * _MB,
    "audio": 16 * _MB,
    "document": 100 * _MB,
    "sticker": 500 * 1024,
}
DEFAULT_TYPES: dict[str, list[str]] = {
    "image": ["image/jpeg", "image/png"],
    "video": ["video/mp4", "video/3gpp"],
    "audio": ["audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"],
    "document": ["*"],
    "sticker": ["image/webp"],
}

MEDIA_SCHEMA = vol.Schema(
    {
        vol.Optional("directory", default="data/media"): vol.All(str, vol.Length(min=1)),
        vol.Optional("max_bytes", default=dict): {
            vol.Optional(kind, default=limit): vol.All(int, vol.Range(min=1, max=2**40))
            for kind, limit in DEFAULT_MAX_BYTES.items()
        },
        # MIME types accepted per kind ("*" accepts any); parameters such as "; codecs=opus" are ignored.
        vol.Optional("types", default=dict): {
            vol.Optional(kind, default=types): [vol.All(str, vol.Length(min=1))]
            for kind, types in DEFAULT_TYPES.items()
        },
    }
)


class MediaRefused(Exception):
    """A file wahub will not keep or send: too big, of a refused type, or damaged."""


@dataclass(frozen=True)
class MediaFile:
    id: str
    provider: str
    direction: str
    sha256: str
    mime_type: str
    size: int
    filename: str | None
    path: str
    provider_media_id: str | None = None

    @property
    def url(self) -> str:
        return f"/api/v1/media/{self.id}"

    def summary(self) -> dict[str, Any]:
        """What a stored message and the REST API tell about the file."""
        return {"id": self.id, "url": self.url, "sha256": self.sha256, "mime_type": self.mime_type, "size": self.size}


@dataclass(frozen=True)
class Download:
    """A file fetched from a provider, with the checksum the provider announced."""

    data: bytes
    mime_type: str
    sha256: str | None = None


def base_type(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def kind_of(mime_type: str) -> str:
    """The message type a file of ``mime_type`` is sent as."""
    main = base_type(mime_type)
    if main == "image/webp":
        return "sticker"
    prefix = main.split("/", 1)[0]
    return prefix if prefix in ("image", "video", "audio") else "document"


def sha256_matches(data: bytes, announced: str) -> bool:
    """Whether ``announced`` is ``data``'s sha256, written in hex or in base64
    (Meta's media endpoint and its webhooks do not agree on one)."""
    digest = hashlib.sha256(data).digest()
    if announced.lower() == digest.hex():
        return True
    try:
        return base64.b64decode(announced, validate=True) == digest
    except (binascii.Error, ValueError):
        return False


class MediaStore:
    def __init__(self, db: Database, config: Mapping[str, Any]) -> None:
        self.db = db
        self.directory = Path(config["directory"])
        self.max_bytes: Mapping[str, int] = config["max_bytes"]
        self.types: Mapping[str, list[str]] = config["types"]

    def check(self, kind: str, mime_type: str, size: int | None) -> None:
        """Raise ``MediaRefused`` naming the problem when a ``kind`` file of this type and size is refused."""
        if kind not in self.max_bytes:
            raise MediaRefused(f"{kind!r} is not a media type ({', '.join(MEDIA_KINDS)})")
        if len(mime_type) > 128 or not _MIME.match(mime_type):
            raise MediaRefused(f"{mime_type[:80]!r} is not a MIME type such as image/jpeg")
        allowed = self.types[kind]
        if "*" not in allowed and base_type(mime_type) not in {base_type(t) for t in allowed}:
            raise MediaRefused(f"{kind} of type {mime_type!r} is not accepted (allowed: {', '.join(allowed)})")
        if size is not None and size > self.max_bytes[kind]:
            raise MediaRefused(f"{kind} of {size} bytes is over the limit of {self.max_bytes[kind]} bytes")

    async def save(
        self,
        provider: str,
        kind: str,
        data: bytes,
        mime_type: str,
        *,
        direction: str,
        provider_media_id: str | None = None,
        filename: str | None = None,
        expected_sha256: str | None = None,
    ) -> MediaFile:
        """Check and keep a file; an inbound file already kept is returned as it is."""
        if expected_sha256 and not sha256_matches(data, expected_sha256):
            raise MediaRefused(f"{kind} does not match its announced sha256 {expected_sha256!r}: damaged in transit")
        self.check(kind, mime_type, len(data))
        digest = hashlib.sha256(data).hexdigest()
        extension = mimetypes.guess_extension(base_type(mime_type)) or ".bin"
        relative = f"{digest[:2]}/{digest}{extension}"
        await asyncio.to_thread(self._write, self.directory / relative, data)
        row = {
            "id": secrets.token_hex(16),
            "provider": provider,
            "direction": direction,
            "provider_media_id": provider_media_id,
            "sha256": digest,
            "mime_type": mime_type,
            "size": len(data),
            "filename": filename[:256] if filename else None,
            "path": relative,
            "created_at": time.time(),
        }
        async with self.db.begin() as conn:
            await conn.execute(insert_ignore(conn, media, ["provider", "provider_media_id"]), row)
        if provider_media_id is not None:
            stored = await self.find(provider, provider_media_id)
            if stored is not None:
                return stored
        return self._file(row)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        partial.write_bytes(data)
        os.replace(partial, path)

    async def get(self, media_id: str) -> MediaFile | None:
        return await self._one(media.c.id == media_id)

    async def find(self, provider: str, provider_media_id: str) -> MediaFile | None:
        return await self._one(media.c.provider == provider, media.c.provider_media_id == provider_media_id)

    async def _one(self, *where: Any) -> MediaFile | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(media).where(*where))).first()
        return None if row is None else self._file(dict(row._mapping))

    @staticmethod
    def _file(row: Mapping[str, Any]) -> MediaFile:
        names = {f.name for f in dataclasses.fields(MediaFile)}
        return MediaFile(**{key: value for key, value in row.items() if key in names})

    async def read(self, file: MediaFile) -> bytes:
        return await asyncio.to_thread((self.directory / file.path).read_bytes)

    def path(self, file: MediaFile) -> Path:
        return self.directory / file.path

    # -- provider ids of uploaded files ----------------------------------

    async def uploaded(self, provider: str, file: MediaFile, *, margin: float = 3600.0) -> str | None:
        """The provider's id for ``file`` if it was uploaded and is still valid for ``margin`` seconds."""
        query = sa.select(media_uploads.c.provider_media_id).where(
            media_uploads.c.provider == provider,
            media_uploads.c.sha256 == file.sha256,
            media_uploads.c.mime_type == file.mime_type,
            media_uploads.c.expires_at > time.time() + margin,
        )
        async with self.db.connect() as conn:
            found: str | None = (await conn.execute(query)).scalar()
        return found

    async def remember_upload(self, provider: str, file: MediaFile, provider_media_id: str, expires_at: float) -> None:
        key = (
            media_uploads.c.provider == provider,
            media_uploads.c.sha256 == file.sha256,
            media_uploads.c.mime_type == file.mime_type,
        )
        values = {"provider_media_id": provider_media_id, "expires_at": expires_at}
        async with self.db.begin() as conn:
            updated = await conn.execute(media_uploads.update().where(*key).values(**values))
            if updated.rowcount == 0:
                await conn.execute(
                    insert_ignore(conn, media_uploads, ["provider", "sha256", "mime_type"]),
                    {"provider": provider, "sha256": file.sha256, "mime_type": file.mime_type, **values},
                )


async def attach_inbound_media(hub: Hub, message: InboundMessage, *, last_try: bool) -> InboundMessage:
    """Download the file of an inbound media message (now: the provider's URL
    for it expires within minutes) and note it in the message as ``wahub_media``.

    A file refused by the limits, or still unreachable on the last try, is
    noted as ``{"error": ...}`` and the message is kept without it.
    """
    body = message.content.get(message.type)
    provider = hub.providers.get(message.provider)
    if message.type not in MEDIA_KINDS or not isinstance(body, dict) or provider is None:
        return message
    media_id = body.get("id")
    if not isinstance(media_id, str) or "wahub_media" in body:
        return message
    store = hub.storage.media
    note: dict[str, Any]
    try:
        file = await store.find(provider.name, media_id)
        if file is None:
            async with asyncio.timeout(FETCH_SECONDS):
                download = await provider.download_media(media_id, message.type)
            if download is None:  # the provider does not host files
                return message
            file = await store.save(
                provider.name,
                message.type,
                download.data,
                download.mime_type or str(body.get("mime_type", "application/octet-stream")),
                direction="in",
                provider_media_id=media_id,
                filename=body.get("filename"),
                expected_sha256=body.get("sha256") or download.sha256,
            )
        note = file.summary()
    except MediaRefused as exc:
        _LOGGER.warning("media %s of message %s not kept: %s", media_id, message.external_id, exc)
        note = {"error": str(exc)}
    except Exception as exc:
        if not last_try:
            raise
        _LOGGER.warning("media %s of message %s could not be fetched: %s", media_id, message.external_id, exc)
        note = {"error": f"could not be fetched: {exc}"}
    content = {**message.content, message.type: {**body, "wahub_media": note}}
    return dataclasses.replace(message, content=content)
