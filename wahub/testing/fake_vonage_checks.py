"""What the fake Vonage Messages API refuses, and how Vonage words it: RFC 7807
problems (``type``, ``title``, ``detail``, ``instance``) for refused
credentials (401), throttling (429) and invalid request bodies (422, with
``invalid_parameters``), and ``body_problems``, the checks of a WhatsApp
``POST /v1/messages`` body against the Messages API v1."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

ERRORS_URL = "https://developer.vonage.com/api-errors"
MESSAGE_ERRORS_URL = f"{ERRORS_URL}/messages"

#: Titles Vonage gives its message error codes.
TITLES = {
    "1000": "Throttled",
    "1020": "Invalid params",
    "1030": "Internal error",
    "1120": "Invalid sender",
    "1150": "Invalid params",
    "1170": "Invalid or missing MSISDN",
    "1260": "Destination unreachable",
    "1340": "Outside the allowed window",
    "1380": "Invalid resource",
}
MESSAGE_TYPES = frozenset({"text", "image", "audio", "video", "file", "sticker", "custom", "reaction", "template"})
CUSTOM_TYPES = frozenset({"template", "interactive", "location", "contacts"})
_ENVELOPE = frozenset(
    {"channel", "message_type", "to", "from", "client_ref", "webhook_url", "webhook_version", "context", "whatsapp"}
)
_MEDIA_KEYS = {
    "image": {"url", "caption"},
    "audio": {"url"},
    "video": {"url", "caption"},
    "file": {"url", "caption", "name"},
    "sticker": {"url", "id"},
}
Problem = tuple[str, str]


def problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> web.Response:
    """A Vonage error answer."""
    body = {"type": kind, "title": title, "detail": detail, "instance": str(uuid.uuid4()), **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def unauthorized() -> web.Response:
    return problem(
        401,
        f"{ERRORS_URL}#unauthorized",
        "Unauthorized",
        "You did not provide correct credentials. Check that you're using the correct credentials, "
        "and that your account has this feature enabled.",
    )


def throttled() -> web.Response:
    return problem(429, f"{ERRORS_URL}#throttled", "Rate Limit Hit", "Please wait, then retry your request")


def coded(status: int, code: str, detail: str | None = None, **extra: Any) -> web.Response:
    """An error answer carrying one of Vonage's message error codes."""
    title = TITLES.get(code, "Error")
    return problem(status, f"{MESSAGE_ERRORS_URL}#{code}", title, detail or f"{title} ({code})", **extra)


def invalid(problems: list[Problem]) -> web.Response:
    """The 422 of a body with invalid parameters, naming each."""
    first = problems[0]
    if first[0] == "from":
        return coded(422, "1120", first[1])
    return coded(
        422,
        "1150",
        "The request body did not contain valid JSON: " + "; ".join(f"{name} {reason}" for name, reason in problems),
        invalid_parameters=[{"name": name, "reason": reason} for name, reason in problems],
    )


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _digits(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and 7 <= len(value) <= 15


def body_problems(body: Any, number: str) -> list[Problem]:
    """What is wrong with a WhatsApp send from ``number``, one ``(parameter, reason)`` each."""
    if not isinstance(body, dict):
        return [("body", "must be a JSON object")]
    found: list[Problem] = []
    kind = body.get("message_type")
    if body.get("channel") != "whatsapp":
        found.append(("channel", "must be whatsapp"))
    if kind not in MESSAGE_TYPES:
        return [*found, ("message_type", f"must be one of {', '.join(sorted(MESSAGE_TYPES))}")]
    if body.get("from") != number:
        found.insert(0, ("from", f"The `from` parameter is invalid for the given channel: {body.get('from')!r}"))
    if not _digits(body.get("to")):
        found.append(("to", "must be a phone number in E.164 format without a leading +"))
    unknown = sorted(set(body) - _ENVELOPE - {str(kind)})
    found += [(key, "is not a parameter of this message") for key in unknown]
    if "client_ref" in body and (not isinstance(body["client_ref"], str) or len(body["client_ref"]) > 100):
        found.append(("client_ref", "must be a string of at most 100 characters"))
    context = body.get("context")
    if context is not None and (not isinstance(context, dict) or not isinstance(context.get("message_uuid"), str)):
        found.append(("context.message_uuid", "must be a message UUID"))
    return found + _content_problems(str(kind), body)


def _content_problems(kind: str, body: dict[str, Any]) -> list[Problem]:
    value = body.get(kind)
    if kind == "text":
        ok = isinstance(value, str) and 1 <= len(value) <= 4096
        return [] if ok else [("text", "must be 1 to 4096 characters")]
    if kind in _MEDIA_KEYS:
        if not isinstance(value, dict):
            return [(kind, "must be an object")]
        found = [(f"{kind}.{key}", "is not a parameter") for key in sorted(set(value) - _MEDIA_KEYS[kind])]
        if kind == "sticker" and "id" in value:
            return found
        if not _is_url(value.get("url")):
            found.append((f"{kind}.url", "must be an http or https URL"))
        caption = value.get("caption")
        if caption is not None and (not isinstance(caption, str) or not 1 <= len(caption) <= 3000):
            found.append((f"{kind}.caption", "must be 1 to 3000 characters"))
        return found
    if kind == "custom":
        if not isinstance(value, dict) or value.get("type") not in CUSTOM_TYPES:
            return [("custom.type", f"must be one of {', '.join(sorted(CUSTOM_TYPES))}")]
        inner = value.get(value["type"])
        return [] if isinstance(inner, (dict, list)) and inner else [(f"custom.{value['type']}", "is required")]
    if kind == "reaction":
        if not isinstance(value, dict) or value.get("action") not in ("react", "unreact"):
            return [("reaction.action", "must be react or unreact")]
        found = []
        if value["action"] == "react" and not (isinstance(value.get("emoji"), str) and value["emoji"]):
            found.append(("reaction.emoji", "is required to react"))
        if not isinstance(body.get("context"), dict):
            found.append(("context.message_uuid", "names the message reacted to"))
        return found
    # template: Vonage's own (namespace:name) template type
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return [("template.name", "is required")]
    return []
