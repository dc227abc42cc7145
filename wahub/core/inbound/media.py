"""Inbound media: download each received file when its message is processed,
and note it in the message for the history and the operator."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from wahub.core.errors import MediaRefused
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage
from wahub.core.storage.media import FETCH_SECONDS, MEDIA_KINDS, MediaFile

_LOGGER = logging.getLogger(__name__)


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
        file = await store.find(provider.name, media_id) or await _download(hub, message, media_id, body)
        if file is None:  # the provider does not host files
            return message
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


async def _download(hub: Hub, message: InboundMessage, media_id: str, body: Mapping[str, Any]) -> MediaFile | None:
    """Stream the file from the provider to disk and keep it; None when the provider hosts no files."""
    provider, store = hub.providers[message.provider], hub.storage.media
    async with store.incoming(message.type) as incoming:
        async with asyncio.timeout(FETCH_SECONDS):
            download = await provider.download_media(media_id, message.type, incoming)
        if download is None:
            return None
        return await store.keep(
            incoming,
            provider.name,
            download.mime_type or str(body.get("mime_type", "application/octet-stream")),
            direction="in",
            provider_media_id=media_id,
            filename=body.get("filename"),
            expected_sha256=body.get("sha256") or download.sha256,
        )
