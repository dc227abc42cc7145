"""The canonical outgoing message: its shape checked once for every provider.

Clients write messages in the Cloud API's shape; ``parse_message`` checks it
and refuses what is wrong with ``InvalidMessage`` naming the field.
``wahub.core.canonical.fit`` then fits a parsed message to one provider.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from wahub.core.errors import InvalidMessage
from wahub.core.models import OutgoingMessage

Json = dict[str, Any]

MESSAGE_TYPES: tuple[str, ...] = (
    *("text", "image", "video", "audio", "document", "sticker", "location", "contacts"),
    *("reaction", "interactive", "template", "mark_read"),
)
INTERACTIVE_TYPES: tuple[str, ...] = ("button", "list", "cta_url", "flow")
MEDIA_TYPES: tuple[str, ...] = ("image", "video", "audio", "document", "sticker")
#: Every kind a provider may support: the types, and ``interactive.<subtype>``.
ALL_KINDS: frozenset[str] = frozenset(MESSAGE_TYPES) | {f"interactive.{sub}" for sub in INTERACTIVE_TYPES}

CAPTIONED = ("image", "video", "document")
_ENVELOPE = frozenset({"messaging_product", "recipient_type", "biz_opaque_callback_data", "to", "type", "context"})
#: Envelope fields that travel with the message to the provider.
_KEPT = ("recipient_type", "biz_opaque_callback_data")
_READ_RECEIPT = frozenset({"messaging_product", "to", "status", "message_id", "typing_indicator"})
_MAX_TO = 128
_MAX_CALLBACK_DATA = 512
_TEMPLATE_COMPONENTS = ("header", "body", "button")
#: Template parameter types, and the JSON type of the value under the same key.
_TEMPLATE_PARAMETERS: dict[str, type] = {
    **dict.fromkeys(("text", "payload", "coupon_code"), str),
    **dict.fromkeys(("currency", "date_time", "image", "video", "document", "location", "action"), dict),
}
#: JSON type names, by the Python type ``_is`` checks for (``float`` is any number, not a bool).
_JSON_NAMES: dict[type, str] = {
    **{bool: "a boolean", float: "a number", str: "a string", list: "an array", dict: "an object"},
    type(None): "null",
}


def field_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(value: Any) -> str:
    return next((name for kind, name in _JSON_NAMES.items() if _is(value, kind)), type(value).__name__)


def _get(obj: Json, key: str, path: str, expected: type = str, *, required: bool = True) -> Any:
    """``obj[key]`` of the expected JSON type; a required string or array must not be blank or empty."""
    where = field_path(path, key)
    if key not in obj:
        if required:
            raise InvalidMessage(where, "is required")
        return None
    value = obj[key]
    if not _is(value, expected):
        raise InvalidMessage(where, f"must be {_JSON_NAMES[expected]}, not {_describe(value)}")
    if required and expected in (str, list) and not (value.strip() if expected is str else value):
        raise InvalidMessage(where, "must not be blank" if expected is str else "must not be empty")
    return value


def _choice(obj: Json, key: str, path: str, options: tuple[str, ...]) -> str:
    value: str = _get(obj, key, path)
    if value not in options:
        raise InvalidMessage(field_path(path, key), f"is {value!r}; must be one of {', '.join(options)}")
    return value


def _objects(obj: Json, key: str, path: str, *, required: bool = True) -> Iterator[tuple[str, Json]]:
    """Each item of the array ``obj[key]`` (non-empty if required), with its path; items must be objects."""
    return _each_object(_get(obj, key, path, list, required=required) or [], field_path(path, key))


def _each_object(items: list[Any], path: str) -> Iterator[tuple[str, Json]]:
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise InvalidMessage(where, f"must be an object, not {_describe(item)}")
        yield where, item


def _url(obj: Json, key: str, path: str) -> None:
    url = _get(obj, key, path)
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidMessage(field_path(path, key), f"must be an http or https URL, not {url!r}")


def _one_of(obj: Json, keys: tuple[str, str], path: str) -> str:
    present = [key for key in keys if key in obj]
    if len(present) != 1:
        raise InvalidMessage(path, f"needs exactly one of {keys[0]} or {keys[1]}{', not both' if present else ''}")
    return present[0]


def _check_text(text: Json, path: str) -> None:
    _get(text, "body", path)
    _get(text, "preview_url", path, bool, required=False)


def _check_media(media: Json, path: str) -> None:
    kind = path.rpartition(".")[2]  # "image", or "interactive.header.image" in a header
    if _one_of(media, ("id", "link"), path) == "link":
        _url(media, "link", path)
    else:
        _get(media, "id", path)
    for key, allowed in (("caption", CAPTIONED), ("filename", ("document",))):
        if key in media and kind not in allowed:
            raise InvalidMessage(field_path(path, key), f"is not allowed for {kind}, only for {', '.join(allowed)}")
        _get(media, key, path, required=False)


def _check_location(location: Json, path: str) -> None:
    for key, bound in (("latitude", 90), ("longitude", 180)):
        if not -bound <= _get(location, key, path, float) <= bound:
            raise InvalidMessage(field_path(path, key), f"is {location[key]}; must be between -{bound} and {bound}")
    _get(location, "name", path, required=False)
    _get(location, "address", path, required=False)


def _check_contacts(contacts: list[Any], path: str) -> None:
    for where, contact in _each_object(contacts, path):
        _get(_get(contact, "name", where, dict), "formatted_name", field_path(where, "name"))
        for phone_path, phone in _objects(contact, "phones", where, required=False):
            _get(phone, "phone", phone_path, required=False)


def _check_reaction(reaction: Json, path: str) -> None:
    _get(reaction, "message_id", path)
    if _get(reaction, "emoji", path, required=False) is None:
        raise InvalidMessage(field_path(path, "emoji"), 'is required ("" takes the reaction away)')


def _check_mark_read(receipt: Json, path: str) -> None:
    _get(receipt, "message_id", path)
    _get(receipt, "typing_indicator", path, bool, required=False)


def _check_template(template: Json, path: str) -> None:
    """The template's shape only: its parameters are checked against the stored
    template by the send policy (``wahub.core.policy.template_params``), which
    also chooses a ``language`` when none is given."""
    _get(template, "name", path)
    language = _get(template, "language", path, dict, required=False)
    if language is not None:
        _get(language, "code", field_path(path, "language"))
    for where, component in _objects(template, "components", path, required=False):
        if _choice(component, "type", where, _TEMPLATE_COMPONENTS) == "button":
            _get(component, "sub_type", where)
            if not any(_is(component.get("index"), kind) for kind in (float, str)):
                raise InvalidMessage(field_path(where, "index"), "must be the button's position, a number or a string")
        for param_path, param in _objects(component, "parameters", where, required=False):
            kind = _choice(param, "type", param_path, tuple(_TEMPLATE_PARAMETERS))
            _get(param, kind, param_path, _TEMPLATE_PARAMETERS[kind])
            if kind == "text":
                _get(param, "parameter_name", param_path, required=False)


def _check_interactive(interactive: Json, path: str) -> None:
    kind = _choice(interactive, "type", path, INTERACTIVE_TYPES)
    if "header" in interactive:
        header_path = field_path(path, "header")
        header = _get(interactive, "header", path, dict)
        header_type = _choice(header, "type", header_path, ("text", "image", "video", "document"))
        if header_type == "text":
            _get(header, "text", header_path)
        else:
            _check_media(_get(header, header_type, header_path, dict), field_path(header_path, header_type))
    _get(_get(interactive, "body", path, dict), "text", field_path(path, "body"))
    if "footer" in interactive:
        _get(_get(interactive, "footer", path, dict), "text", field_path(path, "footer"))
    _ACTIONS[kind](_get(interactive, "action", path, dict), field_path(path, "action"))


def _check_buttons(action: Json, path: str) -> None:
    seen: dict[tuple[str, str], int] = {}
    for index, (where, button) in enumerate(_objects(action, "buttons", path)):
        _choice(button, "type", where, ("reply",))
        reply_path = field_path(where, "reply")
        reply = _get(button, "reply", where, dict)
        for key in ("id", "title"):
            first = seen.setdefault((key, _get(reply, key, reply_path)), index)
            if first != index:
                raise InvalidMessage(
                    field_path(reply_path, key), f"repeats the {key} of button {first}; each must be unique"
                )


def _check_list(action: Json, path: str) -> None:
    _get(action, "button", path)
    sections = list(_objects(action, "sections", path))
    for where, section in sections:
        _get(section, "title", where, required=len(sections) > 1)  # a lone section needs no title
        for row_path, row in _objects(section, "rows", where):
            _get(row, "id", row_path)
            _get(row, "title", row_path)
            _get(row, "description", row_path, required=False)


def _named_action(action: Json, path: str, name: str) -> tuple[Json, str]:
    """The parameters of a named action (``cta_url``, ``flow``), with their path."""
    _choice(action, "name", path, (name,))
    return _get(action, "parameters", path, dict), field_path(path, "parameters")


def _check_cta_url(action: Json, path: str) -> None:
    parameters, where = _named_action(action, path, "cta_url")
    _get(parameters, "display_text", where)
    _url(parameters, "url", where)


def _check_flow(action: Json, path: str) -> None:
    parameters, where = _named_action(action, path, "flow")
    _get(parameters, "flow_cta", where)
    _get(parameters, _one_of(parameters, ("flow_id", "flow_name"), where), where)


_ACTIONS: dict[str, Callable[[Json, str], None]] = {
    "button": _check_buttons,
    "list": _check_list,
    "cta_url": _check_cta_url,
    "flow": _check_flow,
}
_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "text": _check_text,
    **dict.fromkeys(MEDIA_TYPES, _check_media),
    "location": _check_location,
    "contacts": _check_contacts,
    "reaction": _check_reaction,
    "interactive": _check_interactive,
    "template": _check_template,
    "mark_read": _check_mark_read,
}


def _recipient(data: Json) -> str:
    to: str = _get(data, "to", "")
    if len(to) > _MAX_TO:
        raise InvalidMessage("to", f"is {len(to)} characters; at most {_MAX_TO}")
    if any(unicodedata.category(char).startswith("C") for char in to):
        raise InvalidMessage("to", "contains a control character")
    return to


def _refuse_unknown(obj: Json, allowed: frozenset[str], path: str, what: str) -> None:
    unknown = next((key for key in obj if key not in allowed), None)
    if unknown is not None:
        raise InvalidMessage(field_path(path, str(unknown)), f"is not a field of {what}")


def _check_envelope(data: Json) -> None:
    if data.get("messaging_product", "whatsapp") != "whatsapp":
        raise InvalidMessage("messaging_product", "must be 'whatsapp'")
    if data.get("recipient_type", "individual") not in ("individual", "group"):
        raise InvalidMessage("recipient_type", "must be 'individual' or 'group'")
    callback: str | None = _get(data, "biz_opaque_callback_data", "", required=False)
    if callback is not None and len(callback) > _MAX_CALLBACK_DATA:
        raise InvalidMessage("biz_opaque_callback_data", f"is {len(callback)} characters; at most {_MAX_CALLBACK_DATA}")


def _context_id(data: Json) -> str | None:
    if "context" not in data:
        return None
    context: Json = _get(data, "context", "", dict)
    _refuse_unknown(context, frozenset({"message_id"}), "context", "context, which only has message_id")
    context_id: str = _get(context, "message_id", "context")
    return context_id


def _plain(content: Json, field: str) -> Json:
    """A deep copy that is certainly JSON: what the outbox stores is what was checked."""
    try:
        copied: Json = json.loads(json.dumps(content, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(field, f"is not plain JSON ({exc})") from None
    return copied


def _read_receipt(data: Json) -> OutgoingMessage:
    """Meta's own read-receipt body (``"status": "read"``), as a ``mark_read`` message."""
    _refuse_unknown(data, _READ_RECEIPT, "", 'a read receipt ("status": "read")')
    _check_envelope(data)
    to = _recipient(data)
    if data["status"] != "read":
        raise InvalidMessage("status", f"is {data['status']!r}; only 'read' can be sent")
    receipt: Json = {"message_id": _get(data, "message_id", "")}
    if "typing_indicator" in data:
        if data["typing_indicator"] != {"type": "text"}:
            raise InvalidMessage("typing_indicator", 'must be {"type": "text"}')
        receipt["typing_indicator"] = True
    return OutgoingMessage(to=to, type="mark_read", content={"mark_read": receipt})


def parse_message(data: Any) -> OutgoingMessage:
    """The message an API client sent, checked; ``InvalidMessage`` names the first bad field.

    ``data`` is not changed; the returned content is a plain-JSON copy.
    """
    if not isinstance(data, dict):
        raise InvalidMessage("$", f"must be a JSON object, not {_describe(data)}")
    if "status" in data:
        return _read_receipt(data)
    to = _recipient(data)
    kind = _choice(data, "type", "", MESSAGE_TYPES)
    _refuse_unknown(data, _ENVELOPE | {kind}, "", f"a {kind} message")
    _check_envelope(data)
    context_id = _context_id(data)
    body = _get(data, kind, "", list if kind == "contacts" else dict)
    _CHECKS[kind](body, kind)
    content = {kind: body, **{key: data[key] for key in _KEPT if key in data}}
    return OutgoingMessage(to=to, type=kind, content=_plain(content, kind), context_id=context_id)
