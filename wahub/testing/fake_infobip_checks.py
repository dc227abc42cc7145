"""What Infobip's fake checks in a request body, and Infobip's error bodies.

One checker per endpoint returns the first problem as Infobip words it (the
property and what is wrong), or None; the fake answers a problem with
Infobip's 400 body (``BAD_REQUEST``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

#: Infobip's answer for each HTTP status the fake gives without a token of its own.
GENERIC_TOKENS = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHORIZED", "Invalid login details"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    429: ("TOO_MANY_REQUESTS", "Too many requests"),
}


def error_body(status: int, token: str | None = None, text: str | None = None) -> web.Response:
    """Infobip's error answer: ``requestError.serviceException`` with its token and text."""
    generic = GENERIC_TOKENS.get(status, ("GENERAL_ERROR", "Something went wrong. Please contact support."))
    exception = {"messageId": token or generic[0], "text": text or generic[1]}
    return web.json_response({"requestError": {"serviceException": exception}}, status=status)


def _text(obj: Any, key: str, where: str, *, longest: int | None = None) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value:
        return f"{where}{key}: must not be blank"
    if longest is not None and len(value) > longest:
        return f"{where}{key}: size must be between 1 and {longest}"
    return None


def _url(obj: Any, key: str, where: str) -> str | None:
    problem = _text(obj, key, where, longest=2048)
    if problem is None and not str(obj[key]).startswith(("http://", "https://")):
        return f"{where}{key}: must be a valid URL"
    return problem


def _media(caption: bool, filename: bool = False) -> Callable[[dict[str, Any]], str | None]:
    def check(content: dict[str, Any]) -> str | None:
        allowed = {"mediaUrl", *(["caption"] if caption else []), *(["filename"] if filename else [])}
        unknown = sorted(set(content) - allowed)
        if unknown:
            return f"content.{unknown[0]}: unrecognized field"
        if "caption" in content and _text(content, "caption", "content.", longest=3000):
            return _text(content, "caption", "content.", longest=3000)
        return _url(content, "mediaUrl", "content.")

    return check


def _text_content(content: dict[str, Any]) -> str | None:
    if "previewUrl" in content and not isinstance(content["previewUrl"], bool):
        return "content.previewUrl: must be a boolean"
    return _text(content, "text", "content.", longest=4096)


def _location(content: dict[str, Any]) -> str | None:
    for key, bound in (("latitude", 90), ("longitude", 180)):
        value = content.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > bound:
            return f"content.{key}: must be between -{bound} and {bound}"
    return None


def _contacts(content: dict[str, Any]) -> str | None:
    contacts = content.get("contacts")
    if not isinstance(contacts, list) or not contacts:
        return "content.contacts: must not be empty"
    for index, contact in enumerate(contacts):
        name = contact.get("name") if isinstance(contact, dict) else None
        if _text(name, "formattedName", f"content.contacts[{index}].name."):
            return _text(name, "formattedName", f"content.contacts[{index}].name.")
    return None


def _interactive_common(content: dict[str, Any]) -> str | None:
    problem = _text(content.get("body"), "text", "content.body.", longest=1024)
    header = content.get("header")
    if problem is None and header is not None:
        kind = header.get("type") if isinstance(header, dict) else None
        if kind == "TEXT":
            problem = _text(header, "text", "content.header.", longest=60)
        elif kind in ("IMAGE", "VIDEO", "DOCUMENT"):
            problem = _url(header, "mediaUrl", "content.header.")
        else:
            problem = "content.header.type: must be one of TEXT, IMAGE, VIDEO, DOCUMENT"
    if problem is None and "footer" in content:
        problem = _text(content["footer"], "text", "content.footer.", longest=60)
    return problem


def _buttons(content: dict[str, Any]) -> str | None:
    buttons = (content.get("action") or {}).get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        return "content.action.buttons: size must be between 1 and 3"
    for index, button in enumerate(buttons):
        where = f"content.action.buttons[{index}]."
        if not isinstance(button, dict) or button.get("type") != "REPLY":
            return f"{where}type: must be REPLY"
        problem = _text(button, "id", where, longest=256) or _text(button, "title", where, longest=20)
        if problem:
            return problem
    return _interactive_common(content)


def _list(content: dict[str, Any]) -> str | None:
    action = content.get("action") or {}
    problem = _text(action, "title", "content.action.", longest=20)
    sections = action.get("sections")
    if problem is None and (not isinstance(sections, list) or not 1 <= len(sections) <= 10):
        problem = "content.action.sections: size must be between 1 and 10"
    for index, section in enumerate(sections if problem is None and isinstance(sections, list) else []):
        rows = section.get("rows") if isinstance(section, dict) else None
        if not isinstance(rows, list) or not rows:
            return f"content.action.sections[{index}].rows: must not be empty"
        for number, row in enumerate(rows):
            where = f"content.action.sections[{index}].rows[{number}]."
            problem = _text(row, "id", where, longest=200) or _text(row, "title", where, longest=24)
            if problem:
                return problem
    return problem or _interactive_common(content)


#: The content checker of each endpoint under /whatsapp/1/message/, and the canonical kind it sends.
CONTENT_CHECKS: dict[str, tuple[str, Callable[[dict[str, Any]], str | None]]] = {
    "text": ("text", _text_content),
    "image": ("image", _media(caption=True)),
    "document": ("document", _media(caption=True, filename=True)),
    "audio": ("audio", _media(caption=False)),
    "video": ("video", _media(caption=True)),
    "sticker": ("sticker", _media(caption=False)),
    "location": ("location", _location),
    "contact": ("contacts", _contacts),
    "interactive/buttons": ("interactive", _buttons),
    "interactive/list": ("interactive", _list),
}


def envelope_problem(body: Any, sender: str) -> str | None:
    """What is wrong with a message's ``from``, ``to``, ``notifyUrl`` and ``callbackData``."""
    if not isinstance(body, dict):
        return "request body: must be a JSON object"
    if body.get("from") != sender:
        return f"from: {body.get('from')!r} is not a sender of this account"
    to = body.get("to")
    if not isinstance(to, str) or not to.isdigit() or not 6 <= len(to) <= 20:
        return "to: must be a phone number in international format, digits only"
    if "notifyUrl" in body and _url(body, "notifyUrl", ""):
        return _url(body, "notifyUrl", "")
    if "callbackData" in body and _text(body, "callbackData", "", longest=4000):
        return _text(body, "callbackData", "", longest=4000)
    if not isinstance(body.get("content"), dict):
        return "content: must not be null"
    return None


def template_problem(content: dict[str, Any]) -> str | None:
    """What is wrong with a template message's content."""
    problem = _text(content, "templateName", "content.", longest=512) or _text(content, "language", "content.")
    data = content.get("templateData")
    if problem is None and not isinstance(data, dict):
        return "content.templateData: must not be null"
    body = data.get("body") if isinstance(data, dict) else None
    placeholders = body.get("placeholders") if isinstance(body, dict) else None
    if problem is None and (not isinstance(placeholders, list) or not all(isinstance(p, str) for p in placeholders)):
        return "content.templateData.body.placeholders: must be a list of strings"
    return problem


def structure_problem(body: Any) -> str | None:
    """What is wrong with a template create body."""
    if not isinstance(body, dict):
        return "request body: must be a JSON object"
    for key in ("name", "language", "category"):
        if _text(body, key, ""):
            return _text(body, key, "")
    if body["category"] not in ("MARKETING", "UTILITY", "AUTHENTICATION"):
        return "category: must be one of MARKETING, UTILITY, AUTHENTICATION"
    structure = body.get("structure")
    if not isinstance(structure, dict):
        return "structure: must not be null"
    return _text(structure.get("body"), "text", "structure.body.", longest=1024)
