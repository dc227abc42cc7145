"""Canonical messages (the Cloud API's shapes) as Infobip's request bodies.

Each type has its own endpoint under ``/whatsapp/1/message/``; the body is
``{"from", "to", "content": {...}}`` plus ``callbackData`` and ``notifyUrl``.
Templates go to ``/whatsapp/1/message/template`` inside ``{"messages": [...]}``
with the canonical components' parameters as ``templateData``. Media are
given by URL: the provider passes a function that turns a message's media
object into one (``Provider.media_url``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from wahub.core.errors import ProviderError
from wahub.core.models import OutgoingMessage

#: Infobip's endpoint of each canonical type (interactive subtypes by their own name).
PATHS = {
    "text": "text",
    "image": "image",
    "document": "document",
    "audio": "audio",
    "video": "video",
    "sticker": "sticker",
    "location": "location",
    "contacts": "contact",
    "interactive.button": "interactive/buttons",
    "interactive.list": "interactive/list",
    "template": "template",
}
MESSAGE_PATH = "/whatsapp/1/message/"
_SNAKE = re.compile(r"_([a-z0-9])")

MediaUrl = Callable[[Mapping[str, Any]], Awaitable[str]]


def kind_of(message: OutgoingMessage) -> str:
    if message.type == "interactive":
        return f"interactive.{message.content['interactive'].get('type')}"
    return message.type


def camel_case(value: Any) -> Any:
    """The Cloud API's snake_case keys (``first_name``) as Infobip's (``firstName``), all the way down."""
    if isinstance(value, dict):
        return {_SNAKE.sub(lambda m: m.group(1).upper(), key): camel_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_case(item) for item in value]
    return value


async def content_of(message: OutgoingMessage, media_url: MediaUrl) -> dict[str, Any]:
    """The ``content`` of the request for a canonical message of any type but ``template``."""
    kind = kind_of(message)
    body = message.content[message.type]
    if kind == "text":
        text: dict[str, Any] = {"text": body["body"]}
        if "preview_url" in body:
            text["previewUrl"] = bool(body["preview_url"])
        return text
    if kind in ("image", "document", "audio", "video", "sticker"):
        media: dict[str, Any] = {"mediaUrl": await media_url(body)}
        if body.get("caption") and kind in ("image", "document", "video"):
            media["caption"] = body["caption"]
        if kind == "document" and body.get("filename"):
            media["filename"] = body["filename"]
        return media
    if kind == "location":
        keys = ("latitude", "longitude", "name", "address")
        return {key: body[key] for key in keys if body.get(key) is not None}
    if kind == "contacts":
        return {"contacts": camel_case(body)}
    if kind == "interactive.button":
        replies = [button["reply"] for button in body["action"]["buttons"]]
        buttons = [{"type": "REPLY", "id": reply["id"], "title": reply["title"]} for reply in replies]
        return await _interactive(body, {"buttons": buttons}, media_url)
    if kind == "interactive.list":
        action = body["action"]
        sections = [
            {**({"title": s["title"]} if s.get("title") else {}), "rows": [_row(row) for row in s["rows"]]}
            for s in action["sections"]
        ]
        return await _interactive(body, {"title": action["button"], "sections": sections}, media_url)
    raise ProviderError(f"infobip cannot send {kind} messages", code="unsupported")


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    found = {"id": row["id"], "title": row["title"]}
    if row.get("description"):
        found["description"] = row["description"]
    return found


async def _interactive(body: Mapping[str, Any], action: dict[str, Any], media_url: MediaUrl) -> dict[str, Any]:
    content: dict[str, Any] = {"body": {"text": body["body"]["text"]}, "action": action}
    header = body.get("header")
    if isinstance(header, dict):
        kind = header["type"]
        if kind == "text":
            content["header"] = {"type": "TEXT", "text": header["text"]}
        else:
            content["header"] = {"type": kind.upper(), "mediaUrl": await media_url(header[kind])}
    if isinstance(body.get("footer"), dict):
        content["footer"] = {"text": body["footer"]["text"]}
    return content


async def template_content(template: Mapping[str, Any], media_url: MediaUrl) -> dict[str, Any]:
    """The ``content`` of a template send: its name, language and the components' parameters."""
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not code:
        raise ProviderError(f"template {template.get('name')!r} names no language code", code="BAD_REQUEST")
    data: dict[str, Any] = {"body": {"placeholders": []}}
    buttons: list[dict[str, Any]] = []
    for component in template.get("components") or []:
        parameters = component.get("parameters") or []
        if component["type"] == "body":
            data["body"]["placeholders"] = [_placeholder(p) for p in parameters]
        elif component["type"] == "header" and parameters:
            data["header"] = await _template_header(parameters[0], media_url)
        elif component["type"] == "button":
            buttons += [_template_button(component, p) for p in parameters]
    if buttons:
        data["buttons"] = buttons
    return {"templateName": template["name"], "templateData": data, "language": code}


def _placeholder(parameter: Mapping[str, Any]) -> str:
    kind = parameter["type"]
    value = parameter[kind]
    if kind == "text":
        return str(value)
    if isinstance(value, dict) and "fallback_value" in value:  # currency, date_time
        return str(value["fallback_value"])
    raise ProviderError(f"infobip takes text template parameters, not {kind}", code="BAD_REQUEST")


async def _template_header(parameter: Mapping[str, Any], media_url: MediaUrl) -> dict[str, Any]:
    kind = parameter["type"]
    if kind == "text":
        return {"type": "TEXT", "placeholder": str(parameter["text"])}
    if kind in ("image", "video", "document"):
        header = {"type": kind.upper(), "mediaUrl": await media_url(parameter[kind])}
        if kind == "document" and parameter[kind].get("filename"):
            header["filename"] = parameter[kind]["filename"]
        return header
    if kind == "location":
        location = parameter["location"]
        return {"type": "LOCATION", "latitude": location["latitude"], "longitude": location["longitude"]}
    raise ProviderError(f"infobip has no {kind} template header", code="BAD_REQUEST")


def _template_button(component: Mapping[str, Any], parameter: Mapping[str, Any]) -> dict[str, Any]:
    sub_type = str(component.get("sub_type", "")).lower()
    kind = parameter["type"]
    value = parameter.get(kind)
    if sub_type == "quick_reply":
        return {"type": "QUICK_REPLY", "parameter": str(value)}
    if sub_type == "url":
        return {"type": "URL", "parameter": str(value)}
    if sub_type == "copy_code":
        return {"type": "COPY_CODE", "parameter": str(value)}
    raise ProviderError(f"infobip has no {sub_type or '?'} template button parameter", code="BAD_REQUEST")
