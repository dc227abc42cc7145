"""Fitting a canonical message to one provider's capabilities.

Clients write messages in the Cloud API's shape. ``parse_message`` checks that
shape once for every provider; ``adapt`` fits a parsed message to one
provider's ``Capabilities``. Text is never truncated or silently dropped:
a message is sent as written, sent in a documented fallback form, or refused
with ``InvalidMessage`` naming the field. The fallbacks, which users see:

- more reply buttons than the provider allows become a list: button
  "Options", one section, a row per button (same id and title), body, footer
  and a text header kept. A media header, or more buttons than a list has
  rows, is refused.
- a type or interactive subtype the provider lacks becomes a text message,
  keeping the reply-to: a location as its name, address and a Google Maps
  link; contacts as names and phone numbers; reply buttons and lists as the
  body and numbered choices (the person answers by typing); a CTA URL as
  ``label: url``; media sent by link as its caption and link.
- media sent by id, flows, templates, reactions and read receipts have no
  text form: on a provider without them they are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from wahub.core.canonical.validate import (
    ALL_KINDS,
    CAPTIONED,
    MEDIA_TYPES,
    Json,
    field_path,
    parse_message,
)
from wahub.core.errors import InvalidMessage
from wahub.core.models import OutgoingMessage


@dataclass(frozen=True)
class Capabilities:
    """What one provider can send. Defaults are the Cloud API's limits, in characters."""

    types: frozenset[str] = ALL_KINDS
    max_text: int = 4096
    max_caption: int = 1024
    max_buttons: int = 3
    max_button_title: int = 20
    max_button_id: int = 256
    max_list_rows: int = 10
    max_list_sections: int = 10
    max_row_title: int = 24
    max_row_description: int = 72
    max_row_id: int = 200
    max_section_title: int = 24
    max_list_button: int = 20
    max_header_text: int = 60
    max_interactive_body: int = 1024
    max_footer: int = 60
    max_cta_text: int = 20
    max_contacts: int = 5

    def supports(self, kind: str) -> bool:
        """Whether ``kind`` (``"text"``, ``"interactive.list"``) can be sent.

        A subtype also needs its type: without ``interactive`` no subtype is sent.
        """
        return kind in self.types and kind.partition(".")[0] in self.types


CLOUD_API = Capabilities()

# Paths of the limited fields in a message's content; ``[]`` stands for every item.
_LENGTH_LIMITS: tuple[tuple[str, str], ...] = (
    ("text.body", "max_text"),
    *((f"{media}.caption", "max_caption") for media in CAPTIONED),
    ("interactive.header.text", "max_header_text"),
    ("interactive.body.text", "max_interactive_body"),
    ("interactive.footer.text", "max_footer"),
    ("interactive.action.buttons[].reply.title", "max_button_title"),
    ("interactive.action.buttons[].reply.id", "max_button_id"),
    ("interactive.action.button", "max_list_button"),
    ("interactive.action.sections[].title", "max_section_title"),
    ("interactive.action.sections[].rows[].title", "max_row_title"),
    ("interactive.action.sections[].rows[].description", "max_row_description"),
    ("interactive.action.sections[].rows[].id", "max_row_id"),
    ("interactive.action.parameters.display_text", "max_cta_text"),
)
_COUNT_LIMITS: tuple[tuple[str, str, str], ...] = (
    ("contacts[]", "max_contacts", "contacts"),
    ("interactive.action.sections[]", "max_list_sections", "sections"),
    ("interactive.action.sections[].rows[]", "max_list_rows", "rows across all sections"),
)


def _found(value: Any, keys: list[str], path: str) -> Iterator[tuple[str, Any]]:
    """The values at a limit's path, with their own paths; ``key[]`` walks an array."""
    if not keys:
        yield path, value
        return
    key, array = keys[0].removesuffix("[]"), keys[0].endswith("[]")
    if not isinstance(value, dict) or key not in value:
        return
    if not array:
        yield from _found(value[key], keys[1:], field_path(path, key))
        return
    for index, item in enumerate(value[key]):
        yield from _found(item, keys[1:], f"{field_path(path, key)}[{index}]")


def _check_limits(message: OutgoingMessage, caps: Capabilities) -> None:
    for pattern, limit_name in _LENGTH_LIMITS:
        limit: int = getattr(caps, limit_name)
        for where, text in _found(message.content, pattern.split("."), ""):
            if len(text) > limit:
                raise InvalidMessage(where, f"is {len(text)} characters; at most {limit}")
    for pattern, limit_name, noun in _COUNT_LIMITS:
        limit = getattr(caps, limit_name)
        for number, (where, _item) in enumerate(_found(message.content, pattern.split("."), ""), 1):
            if number > limit:
                raise InvalidMessage(where, f"is number {number}; at most {limit} {noun}")


def _buttons_to_list(message: OutgoingMessage, caps: Capabilities) -> OutgoingMessage:
    """Reply buttons beyond the provider's maximum, as a one-section list."""
    interactive = message.content["interactive"]
    buttons = interactive["action"]["buttons"]
    where = "interactive.action.buttons"
    too_many = f"has {len(buttons)} buttons; at most {caps.max_buttons}"
    if not caps.supports("interactive.list"):
        raise InvalidMessage(where, f"{too_many}, and this provider has no lists to turn them into")
    if len(buttons) > caps.max_list_rows:
        raise InvalidMessage(where, f"{too_many}, or {caps.max_list_rows} as a list")
    if interactive.get("header", {}).get("type", "text") != "text":
        raise InvalidMessage(where, f"{too_many}; as a list they would need a text header, not a media one")
    for index, button in enumerate(buttons):
        for key, limit in (("title", caps.max_row_title), ("id", caps.max_row_id)):
            length = len(button["reply"][key])
            if length > limit:
                reason = f"is {length} characters; at most {limit} as a row of the list that replaces the buttons"
                raise InvalidMessage(f"{where}[{index}].reply.{key}", reason)
    rows = [{"id": button["reply"]["id"], "title": button["reply"]["title"]} for button in buttons]
    action = {"button": "Options", "sections": [{"rows": rows}]}
    return replace(
        message, content={**message.content, "interactive": {**interactive, "type": "list", "action": action}}
    )


def _numbered(choices: list[str]) -> str:
    return "\n".join(f"{number}. {choice}" for number, choice in enumerate(choices, 1))


def _row_choice(row: Json) -> str:
    return f"{row['title']}: {row['description']}" if row.get("description") else str(row["title"])


_CHOICES: dict[str, Callable[[Json], str]] = {
    "button": lambda action: _numbered([button["reply"]["title"] for button in action["buttons"]]),
    "list": lambda action: _numbered([_row_choice(row) for section in action["sections"] for row in section["rows"]]),
    "cta_url": lambda action: f"{action['parameters']['display_text']}: {action['parameters']['url']}",
}


def _media_text(media: Json, path: str) -> str:
    if "link" not in media:
        kind = path.rpartition(".")[2]
        reason = f"{kind} is not supported by this provider, and media by id cannot be shown as text (a link can)"
        raise InvalidMessage(field_path(path, "id"), reason)
    return "\n".join(part for part in (media.get("caption"), media["link"]) if part)


def _location_text(location: Json, path: str) -> str:
    maps = f"https://maps.google.com/?q={location['latitude']},{location['longitude']}"
    return "\n".join(part for part in (location.get("name"), location.get("address"), maps) if part)


def _contacts_text(contacts: list[Json], path: str) -> str:
    lines = []
    for contact in contacts:
        phones = ", ".join(phone["phone"] for phone in contact.get("phones", []) if phone.get("phone"))
        name = contact["name"]["formatted_name"]
        lines.append(f"{name}: {phones}" if phones else name)
    return "\n".join(lines)


def _interactive_text(interactive: Json, path: str) -> str:
    header = interactive.get("header", {"type": "text", "text": ""})
    kind = header["type"]
    parts = (
        header["text"] if kind == "text" else _media_text(header[kind], f"{path}.header.{kind}"),
        interactive["body"]["text"],
        _CHOICES[interactive["type"]](interactive["action"]),
        interactive.get("footer", {}).get("text"),
    )
    return "\n\n".join(part for part in parts if part)


_AS_TEXT: dict[str, Callable[[Any, str], str]] = {
    **dict.fromkeys(MEDIA_TYPES, _media_text),
    "location": _location_text,
    "contacts": _contacts_text,
    **dict.fromkeys((f"interactive.{sub}" for sub in _CHOICES), _interactive_text),
}


def _kind(message: OutgoingMessage) -> str:
    if message.type == "interactive":
        return f"interactive.{message.content['interactive']['type']}"
    return message.type


def _as_text(message: OutgoingMessage, caps: Capabilities) -> OutgoingMessage:
    """A message of a kind the provider lacks, as the text a person would read."""
    kind = _kind(message)
    where = "interactive.type" if message.type == "interactive" else "type"
    render = _AS_TEXT.get(kind)
    if render is None or not caps.supports("text"):
        fallback = "" if render is None else ", nor text to fall back on"
        raise InvalidMessage(where, f"{kind.rpartition('.')[2]} is not supported by this provider{fallback}")
    body = render(message.content[message.type], message.type)
    if len(body) > caps.max_text:
        raise InvalidMessage(message.type, f"is {len(body)} characters as text; at most {caps.max_text}")
    kept = {key: value for key, value in message.content.items() if key != message.type}
    return replace(message, type="text", content={"text": {"body": body}, **kept})


def adapt(message: OutgoingMessage, caps: Capabilities) -> OutgoingMessage:
    """The message in a form the provider can send (see the module docstring), or ``InvalidMessage``.

    The message is checked again first, so one built in code fails as clearly
    as one from a client. A message that fits is returned as it is.
    """
    parse_message(message.to_json())
    if (
        _kind(message) == "interactive.button"
        and caps.supports("interactive.button")
        and len(message.content["interactive"]["action"]["buttons"]) > caps.max_buttons
    ):
        message = _buttons_to_list(message, caps)
    if not caps.supports(_kind(message)):
        message = _as_text(message, caps)
    _check_limits(message, caps)
    return message
