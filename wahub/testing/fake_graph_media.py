"""Media endpoints of the fake Graph API (``fake_graph``): upload (``/media``, and
the Resumable Upload API's handles), download, and the files the fake keeps on disk."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from wahub.testing.fake_graph_http import Endpoints, graph_error, numeric_id


@dataclass
class MediaItem:
    """A file the fake holds, on disk, with its sha256 (hex) and size."""

    path: Path
    mime_type: str
    sha256: str
    size: int
    filename: str | None = None

    @property
    def data(self) -> bytes:
        """The file's bytes, read from disk (for small files)."""
        return self.path.read_bytes()


class MediaEndpoints(Endpoints):
    """Media and upload handles; the fields are ``FakeGraphServer``'s."""

    chunked_downloads: bool
    media: dict[str, MediaItem]
    handles: dict[str, MediaItem]
    _uploads: dict[str, tuple[int, str]]
    _files: Path | None

    def add_media(self, data: bytes | Path, mime_type: str, *, media_id: str | None = None) -> str:
        """Store a media object (one a user sent, say); returns its id. A ``Path``
        is served from where it is, in chunks: a large file is never whole in memory."""
        media_id = media_id or numeric_id()
        if isinstance(data, Path):
            digest = hashlib.sha256()
            with data.open("rb") as file:
                while block := file.read(1 << 20):
                    digest.update(block)
            self.media[media_id] = MediaItem(data, mime_type, digest.hexdigest(), data.stat().st_size)
        else:
            self.media[media_id] = self._keep_bytes(data, mime_type)
        return media_id

    def _new_file(self) -> Path:
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="wahub-fake-graph-"))
        return self._files / secrets.token_hex(12)

    def _keep_bytes(self, data: bytes, mime_type: str) -> MediaItem:
        path = self._new_file()
        path.write_bytes(data)
        return MediaItem(path, mime_type, hashlib.sha256(data).hexdigest(), len(data))

    async def _upload_session(self, request: web.Request) -> web.StreamResponse:
        """Resumable Upload, step 1: ``POST /{app-id}/uploads?file_name&file_length&file_type``."""
        query = request.query
        if not query.get("file_name") or not query.get("file_length", "").isdigit() or not query.get("file_type"):
            return self._refuse(["$: file_name, file_length (bytes) and file_type are required query parameters"])
        session = f"upload:{secrets.token_urlsafe(16)}"
        self._uploads[session] = (int(query["file_length"]), query["file_type"])
        return web.json_response({"id": session})

    async def _upload_bytes(self, request: web.Request, session: str) -> web.StreamResponse:
        """Resumable Upload, step 2: ``POST /{upload-id}`` with ``file_offset: 0`` and the bytes."""
        length, mime_type = self._uploads[session]
        data = await request.read()
        if request.headers.get("file_offset") != "0" or len(data) != length:
            return self._refuse([f"$: send all {length} bytes at file_offset 0 (got {len(data)})"])
        handle = f"4::{secrets.token_urlsafe(24)}"
        self.handles[handle] = self._keep_bytes(data, mime_type)
        del self._uploads[session]
        return web.json_response({"h": handle})

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /{phone-number-id}/media``: the multipart body read as it comes, the file streamed to disk."""
        fields: dict[str, str] = {}
        item: MediaItem | None = None
        if request.content_type != "multipart/form-data":
            return self._refuse(["$: the upload must be multipart/form-data"])
        try:
            async for part in await request.multipart():
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.name == "file":
                    item = await self._receive(part)
                else:
                    fields[part.name] = await part.text()
        except ValueError as exc:
            return self._refuse([f"$: the multipart body cannot be read ({exc})"])
        if item is None or "type" not in fields or fields.get("messaging_product") != "whatsapp":
            if item is not None:
                item.path.unlink()
            return self._refuse(["$: multipart/form-data needs file, type and messaging_product=whatsapp"])
        item.mime_type = fields["type"]
        self.media[media_id := numeric_id()] = item
        return web.json_response({"id": media_id})

    async def _receive(self, part: aiohttp.BodyPartReader) -> MediaItem:
        path, digest, size = self._new_file(), hashlib.sha256(), 0
        with path.open("wb") as file:
            while chunk := await part.read_chunk(1 << 16):
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
        mime_type = part.headers.get("Content-Type", "application/octet-stream")
        return MediaItem(path, mime_type, digest.hexdigest(), size, part.filename)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        item = self.media.get(request.query.get("mid", ""))
        if item is None:
            return graph_error(404, 100, "Invalid parameter", "unknown media")
        if not self.chunked_downloads:
            return web.FileResponse(item.path, headers={"Content-Type": item.mime_type})
        response = web.StreamResponse(headers={"Content-Type": item.mime_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with item.path.open("rb") as file:
            while block := await asyncio.to_thread(file.read, 1 << 16):
                await response.write(block)
        await response.write_eof()
        return response
