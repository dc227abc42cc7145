"""Media files: what users send, downloaded and kept; what the business sends,
uploaded once per provider and its id remembered until it expires.

Files live under ``wahub.media.directory``, named by their sha256, so the same
file is stored once. The database holds who sent each file and its type; the
REST API serves a stored file at ``/api/v1/media/{id}`` (bearer token), and
``POST /api/v1/media`` stores a file to send: a message names it with the
media id ``wahub:<id>`` and the provider uploads it when the message leaves.

A file is never whole in memory: it arrives in chunks into an ``IncomingFile``
(a temporary file in ``.incoming/`` of the media directory, hashed as it is
written, stopped at the size limit) and is renamed into place only once
checked, so a crash never leaves part of a file under a final name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import mimetypes
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import sqlalchemy as sa

from wahub.core.errors import MediaRefused, MediaTooLarge
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import media, media_uploads
from wahub.core.storage.settings import SettingsStore

_LOGGER = logging.getLogger(__name__)

MEDIA_KINDS: tuple[str, ...] = ("image", "video", "audio", "document", "sticker")
#: Outbound media ids naming a file stored here rather than at the provider.
LOCAL_PREFIX = "wahub:"
_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+\s*(;.*)?$")
#: Time an inbound file may take to download: well inside the time one inbox
#: event may take, so a slow file delays the message but never loses it.
FETCH_SECONDS = 40.0
#: Where files being received are written, inside the media directory (the
#: same file system, so the final rename is atomic).
INCOMING = ".incoming"
#: A file being received is written to disk whenever this much is buffered.
FLUSH_BYTES = 1024 * 1024
#: A partial file untouched this long was left by a process that died; it is removed.
STALE_SECONDS = 3600.0


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
    """What a provider tells about a file it wrote into an ``IncomingFile``:
    its type and the checksum the provider announced."""

    mime_type: str
    sha256: str | None = None


class IncomingFile:
    """A file arriving in chunks (``await write(chunk)``): kept in a temporary
    file, hashed as it comes, refused with ``MediaTooLarge`` as soon as it passes
    ``limit`` bytes. Use it as ``async with store.incoming(kind) as incoming``:
    unless ``MediaStore.keep`` took it, the temporary file is removed on exit."""

    def __init__(self, directory: Path, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self.size = 0
        self.path = directory / INCOMING / f"{secrets.token_hex(12)}.part"
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: IO[bytes] | None = None
        self._created = False
        self._receiving = False

    @property
    def digest(self) -> bytes:
        """The sha256 of what was written so far."""
        return self._hash.digest()

    async def write(self, chunk: bytes) -> None:
        if not self._receiving:
            raise RuntimeError("an IncomingFile is written inside `async with`, before it is kept")
        if self.size + len(chunk) > self.limit:  # stop here: whatever the sender announced
            raise MediaTooLarge(f"{self.kind} is over the limit of {self.limit} bytes")
        self.size += len(chunk)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= FLUSH_BYTES:
            await self._flush()

    async def finish(self) -> None:
        """Write what is buffered and make it durable (before the rename that publishes it)."""
        if not self._receiving:
            raise RuntimeError("an IncomingFile is finished once, inside `async with`")
        await self._flush()
        file = self._file
        if file is None:  # nothing came: an empty file
            file = await asyncio.to_thread(self._create)
        self._file, self._receiving = None, False
        await asyncio.to_thread(_sync_and_close, file)

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        file = self._file
        if file is None:  # created at the first flush: a download failing before that touches no disk
            file = self._file = await asyncio.to_thread(self._create)
        await asyncio.to_thread(self._write, file, data)

    def _create(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.path.parent)
        self._created = True
        return self.path.open("xb")

    def _write(self, file: IO[bytes], data: bytes) -> None:
        self._hash.update(data)  # hashlib lets go of the GIL: hashed off the event loop too
        file.write(data)

    async def __aenter__(self) -> IncomingFile:
        self._receiving = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        file, self._file, self._receiving = self._file, None, False
        if self._created:
            await asyncio.shield(asyncio.to_thread(_close_and_remove, file, self.path))


def _sync_and_close(file: IO[bytes]) -> None:
    with file:
        file.flush()
        os.fsync(file.fileno())


def _close_and_remove(file: IO[bytes] | None, path: Path) -> None:
    if file is not None:
        file.close()
    path.unlink(missing_ok=True)


def _remove_stale(incoming: Path) -> None:
    """Remove partial files a process that died left behind (any replica's: none writes to one that long)."""
    cutoff = time.time() - STALE_SECONDS
    for entry in os.scandir(incoming):
        try:
            if entry.name.endswith(".part") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                _LOGGER.info("removed the partial media file %s, untouched for an hour", entry.name)
        except FileNotFoundError:  # another process removed it first
            continue


def base_type(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def kind_of(mime_type: str) -> str:
    """The message type a file of ``mime_type`` is sent as."""
    main = base_type(mime_type)
    if main == "image/webp":
        return "sticker"
    prefix = main.split("/", 1)[0]
    return prefix if prefix in ("image", "video", "audio") else "document"


def sha256_matches(digest: bytes, announced: str) -> bool:
    """Whether ``announced`` is the sha256 ``digest``, written in hex or in base64
    (Meta's media endpoint and its webhooks do not agree on one)."""
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
        self._key: bytes | None = None

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
            raise MediaTooLarge(f"{kind} of {size} bytes is over the limit of {self.max_bytes[kind]} bytes")

    def incoming(self, kind: str) -> IncomingFile:
        """A file of ``kind`` to receive, stopped at that kind's size limit (see ``IncomingFile``)."""
        if kind not in self.max_bytes:
            raise MediaRefused(f"{kind!r} is not a media type ({', '.join(MEDIA_KINDS)})")
        return IncomingFile(self.directory, kind, self.max_bytes[kind])

    async def keep(
        self,
        incoming: IncomingFile,
        provider: str,
        mime_type: str,
        *,
        direction: str,
        provider_media_id: str | None = None,
        filename: str | None = None,
        expected_sha256: str | None = None,
    ) -> MediaFile:
        """Check a received file and move it into place under its sha256; an
        inbound file already kept is returned as it is."""
        kind = incoming.kind
        await incoming.finish()
        if expected_sha256 and not sha256_matches(incoming.digest, expected_sha256):
            raise MediaRefused(f"{kind} does not match its announced sha256 {expected_sha256!r}: damaged in transit")
        self.check(kind, mime_type, incoming.size)
        digest = incoming.digest.hex()
        extension = mimetypes.guess_extension(base_type(mime_type)) or ".bin"
        relative = f"{digest[:2]}/{digest}{extension}"
        await asyncio.to_thread(_publish, incoming.path, self.directory / relative)
        row = {
            "id": secrets.token_hex(16),
            "provider": provider,
            "direction": direction,
            "provider_media_id": provider_media_id,
            "sha256": digest,
            "mime_type": mime_type,
            "size": incoming.size,
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

    async def save(self, provider: str, kind: str, data: bytes, mime_type: str, **keep: Any) -> MediaFile:
        """``keep`` a file already in memory (a small one: larger files go through ``incoming``)."""
        async with self.incoming(kind) as incoming:
            await incoming.write(data)
            return await self.keep(incoming, provider, mime_type, **keep)

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

    # -- public URLs, for providers that fetch what they send --------------

    async def public_path(self, file: MediaFile, *, ttl: float, now: float | None = None) -> str:
        """The path (``/media/public/<token>``) at which ``file`` can be fetched
        without credentials for ``ttl`` seconds; put a provider's public base URL
        before it. The token is signed with a key every replica shares."""
        expires = int((time.time() if now is None else now) + ttl)
        payload = f"{file.id}.{expires}"
        return f"{PUBLIC_MEDIA_PATH}{payload}.{_token_signature(await self._url_key(), payload)}"

    async def public_file(self, token: str, *, now: float | None = None) -> MediaFile | None:
        """The outbound file a token of ``public_path`` names, or None when the
        token is forged, expired or names no outbound file."""
        file_id, _, rest = token.partition(".")
        expires, _, signature = rest.partition(".")
        if not (file_id.isalnum() and expires.isdigit() and signature):
            return None
        expected = _token_signature(await self._url_key(), f"{file_id}.{expires}")
        if not secrets.compare_digest(signature.encode(), expected.encode()):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        file = await self.get(file_id)
        return file if file is not None and file.direction == "out" else None

    async def _url_key(self) -> bytes:
        if self._key is None:
            self._key = bytes.fromhex(await SettingsStore(self.db).setdefault(_URL_KEY, secrets.token_hex(32)))
        return self._key


#: Where ``MediaStore.public_path`` serves files.
PUBLIC_MEDIA_PATH = "/media/public/"
_URL_KEY = "media_url_key"


def _token_signature(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


def _publish(partial: Path, final: Path) -> None:
    """Give a complete file its final name in one atomic rename (or drop it: the same bytes are there)."""
    if final.exists():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:  # the rename itself survives a power cut before the row naming the file is committed
        os.fsync(directory)
    finally:
        os.close(directory)
