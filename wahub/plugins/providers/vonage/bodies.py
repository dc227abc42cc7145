"""Canonical messages (the Cloud API's shapes) as Vonage Messages API v1 bodies.

Text and media have Vonage types of their own (``text``, ``image``,
``audio``, ``video``, ``file``, ``sticker``), media by URL only: a file
stored in wahub goes as a signed, expiring URL of wahub's (``media_url``).
What Vonage has no type for (templates, interactive messages, locations,
contacts) goes as ``message_type: custom`` carrying the Cloud API object
itself, which Vonage passes to WhatsApp. Reactions are Vonage's ``reaction``
type, naming the reacted message in ``context``.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from wahub.core.errors import ProviderError
from wahub.core.models import OutgoingMessage
from wahub.core.storage.media import LOCAL_PREFIX

Json = dict[str, Any]
#: ``media_url(media)``: the URL Vonage fetches a media object's file from.
MediaUrl = Callable[[Json], Awaitable[str]]

#: Vonage's longest ``client_ref``.
MAX_CLIENT_REF = 100
#: Canonical media types and Vonage's names for them.
MEDIA_TYPES = {"image": "image", "audio": "audio", "video": "video", "document": "file", "sticker": "sticker"}
#: Canonical types sent as ``custom``: the Cloud API object goes as it is.
CUSTOM_TYPES = frozenset({"template", "interactive", "location", "contacts"})


async def message_body(message: OutgoingMessage, *, to: str, sender: str, media_url: MediaUrl) -> Json:
    """The ``POST /v1/messages`` body of ``message`` from ``sender`` to ``to`` (digits)."""
    body: Json = {"channel": "whatsapp", "to": to, "from": sender}
    content = message.content[message.type]
    if message.type == "text":
        body.update(message_type="text", text=content["body"])
    elif message.type in MEDIA_TYPES:
        body.update(await _media(message.type, content, media_url))
    elif message.type in CUSTOM_TYPES:
        custom = {"type": message.type, message.type: copy.deepcopy(content)}
        await _links_for_local_files(custom, media_url)
        body.update(message_type="custom", custom=custom)
    elif message.type == "reaction":
        emoji = content.get("emoji") or ""
        reaction = {"action": "react", "emoji": emoji} if emoji else {"action": "unreact"}
        body.update(message_type="reaction", reaction=reaction, context={"message_uuid": content["message_id"]})
        return body
    else:
        raise ProviderError(f"vonage cannot send a {message.type} message", code="unsupported")
    if message.context_id:
        body["context"] = {"message_uuid": message.context_id}
    reference = message.content.get("biz_opaque_callback_data")
    if reference is not None:
        if len(reference) > MAX_CLIENT_REF:
            raise ProviderError(
                f"biz_opaque_callback_data is {len(reference)} characters; Vonage's client_ref holds "
                f"at most {MAX_CLIENT_REF}",
                code="client_ref",
            )
        body["client_ref"] = reference
    return body


async def _media(kind: str, media: Json, media_url: MediaUrl) -> Json:
    name = MEDIA_TYPES[kind]
    resource: Json = {"url": await media_url(media)}
    if media.get("caption") and kind in ("image", "video", "document"):
        resource["caption"] = media["caption"]
    if media.get("filename") and kind == "document":
        resource["name"] = media["filename"]
    return {"message_type": name, name: resource}


async def _links_for_local_files(value: Any, media_url: MediaUrl) -> None:
    """Give every media object in a custom payload naming a file stored in
    wahub (``id: wahub:...``) a ``link`` instead: Vonage cannot fetch wahub's ids."""
    if isinstance(value, dict):
        media_id = value.get("id")
        if isinstance(media_id, str) and media_id.startswith(LOCAL_PREFIX) and "link" not in value:
            value["link"] = await media_url(value)
            del value["id"]
        for item in value.values():
            await _links_for_local_files(item, media_url)
    elif isinstance(value, list):
        for item in value:
            await _links_for_local_files(item, media_url)


def read_receipt_body() -> Json:
    """The ``PATCH /v1/messages/{message_uuid}`` body marking an inbound message read."""
    return {"status": "read"}
