"""The REST API's files: ``POST /api/v1/media`` stores a file to send
(multipart field ``file``, the ``provider`` it is for), streamed to disk; 201
with its id ``wahub:<id>`` for a message's media object, 413 past its kind's
size limit. ``GET /api/v1/media/{id}`` sends a stored file (inbound or
outbound) from disk, never as a page.
"""

from __future__ import annotations

import contextlib
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from wahub.core.errors import MediaRefused, MediaTooLarge, SendRefused
from wahub.core.http.api_io import error, json_response, path_text, storable
from wahub.core.http.api_schemas import TEXT, obj
from wahub.core.http.openapi import Answer, Operation, Param, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.storage.media import LOCAL_PREFIX, PUBLIC_MEDIA_PATH, MediaFile, kind_of


async def get_media(request: web.Request) -> web.StreamResponse:
    return await media_response(request.app[HUB_KEY], path_text(request, "id"))


async def media_response(hub: Hub, media_id: str, *, in_page: bool = False) -> web.StreamResponse:
    """The stored file ``media_id`` (inbound or outbound), sent from disk, or a 404.

    ``in_page``: for a web page's origin (the inbox), where a file that is not
    a picture, a sound or a film is sent as ``application/octet-stream``, so
    that no page of that origin can ever load it as a script or a style."""
    store = hub.storage.media
    file = await store.get(media_id)
    if file is None or not store.path(file).is_file():
        return error(404, "not_found", "no such media file")
    inline = shown_inline(file.mime_type)
    headers = {
        "Content-Type": file.mime_type if inline or not in_page else "application/octet-stream",
        "X-Content-SHA256": file.sha256,
        "X-Content-Type-Options": "nosniff",
        # A stored file is whatever a user or an uploader sent: it never runs as a page.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    disposition = "inline" if inline else "attachment"
    if file.filename:
        disposition += f"; filename*=UTF-8''{quote(file.filename, safe='')}"
    headers["Content-Disposition"] = disposition
    return web.FileResponse(store.path(file), headers=headers)


async def get_public_media(request: web.Request) -> web.StreamResponse:
    """``GET /media/public/<token>``: an outbound file at the signed, expiring URL
    a provider that fetches media by URL was given (``MediaStore.public_path``);
    404 for anything else."""
    hub = request.app[HUB_KEY]
    file = await hub.storage.media.public_file(request.match_info["token"])
    if file is None:
        return error(404, "not_found", "no such media file, or its link has expired")
    return await media_response(hub, file.id)


def public_media_routes() -> list[web.RouteDef]:
    """Routes without credentials: the signed token is the credential."""
    return [web.get(PUBLIC_MEDIA_PATH + "{token}", get_public_media)]


def shown_inline(mime_type: str) -> bool:
    """Whether a stored file of this type may be shown in a page (a picture, a
    sound, a film); every other type, scripts, HTML and SVG among them, is only
    ever downloaded."""
    kind, _, subtype = mime_type.lower().partition("/")
    return kind in ("image", "audio", "video") and "svg" not in subtype and "xml" not in subtype


async def upload_media(request: web.Request) -> web.Response:
    stored = await stored_upload(request)
    if isinstance(stored, web.Response):
        return stored
    file = stored
    kind = kind_of(file.mime_type)
    return json_response({**file.summary(), "id": f"{LOCAL_PREFIX}{file.id}", "kind": kind}, status=201)


async def stored_upload(request: web.Request) -> MediaFile | web.Response:
    """Store a file to send, or the error answer saying why not. The multipart
    body is read as it comes (``request.multipart()``, which ``client_max_size``
    does not cap: that guards ``request.read()``), the file streamed to disk and
    refused as soon as it passes its kind's size limit."""
    hub = request.app[HUB_KEY]
    store = hub.storage.media
    if not request.content_type.startswith("multipart/"):
        return error(400, "invalid_upload", "send the file as multipart/form-data in a field named 'file'")
    provider, incoming, mime_type, filename = request.query.get("provider"), None, "", None
    try:
        async with contextlib.AsyncExitStack() as stack:
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "provider":
                    provider = (await part.text()).strip()
                elif part.name == "file" and incoming is not None:
                    return error(400, "invalid_upload", "send one file per upload, in one field named 'file'")
                elif part.name == "file":
                    mime_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                    filename = part.filename
                    if not storable(mime_type) or (filename is not None and not storable(filename)):
                        return error(
                            400,
                            "invalid_upload",
                            "the file's name and type may not contain U+0000 or unpaired surrogates",
                        )
                    store.check(kind_of(mime_type), mime_type, None)  # a refused type is not read at all
                    incoming = await stack.enter_async_context(store.incoming(kind_of(mime_type)))
                    while chunk := await part.read_chunk(1 << 16):
                        await incoming.write(chunk)
            if incoming is None:
                return error(400, "invalid_upload", "no multipart field named 'file'")
            try:
                name = hub.provider(provider).name
            except SendRefused as exc:
                return error(404, exc.reason, str(exc))
            return await store.keep(incoming, name, mime_type, direction="out", filename=filename)
    except MediaTooLarge as exc:
        return error(413, "media_refused", str(exc))
    except MediaRefused as exc:
        return error(422, "media_refused", str(exc))
    except (ValueError, HttpProcessingError) as exc:  # a malformed body or part header, or text not in its charset
        return error(400, "invalid_upload", f"the multipart body is malformed: {exc}")


UPLOADED = obj(
    ["id", "url", "sha256", "mime_type", "size", "kind"],
    id={"type": "string", "description": "The media id for a message's media object: wahub:<id>"},
    url=TEXT,
    sha256=TEXT,
    mime_type=TEXT,
    size={"type": "integer", "minimum": 0},
    kind={"enum": ["image", "audio", "video", "document", "sticker"]},
)


def operations() -> list[Operation]:
    upload = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream", "description": "The file"},
            "provider": {"type": "string", "description": "The provider it is for (or ?provider=)"},
        },
    }
    return [
        Operation(
            "POST",
            "/api/v1/media",
            upload_media,
            "Store a file to send",
            "media",
            {201: Answer("Stored", UPLOADED), **errors(400, 401, 404, 413, 422)},
            description="The file is streamed to disk and refused as soon as it passes its kind's size limit (413).",
            params=[Param("provider", {"type": "string"}, "The provider it is for (or the multipart field)")],
            other_body={"multipart/form-data": {"schema": upload}},
        ),
        Operation(
            "GET",
            "/api/v1/media/{id}",
            get_media,
            "A stored file (inbound or outbound)",
            "media",
            {
                200: Answer("The file, with X-Content-SHA256", {"type": "string", "contentMediaType": "*/*"}, "*/*"),
                **errors(401, 404),
            },
            params=[Param("id", {"type": "string", "minLength": 1, "maxLength": 128}, "The file's id", where="path")],
        ),
    ]
