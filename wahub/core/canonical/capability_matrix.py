"""What each provider sends, and what becomes of the rest: the capability matrix.

Every cell is worked out by ``adapt`` itself (``wahub.core.canonical.fit``):
a small valid message of each kind is fitted to the provider's
``Capabilities`` and the outcome read off, so the matrix can never say other
than what ``hub.send`` does. The outcomes:

- ``sent``: sent as written;
- ``list``: more reply buttons than the provider allows arrive as a list;
- ``text``: the provider lacks the kind, and its text form is sent instead;
- ``refused``: the provider lacks the kind and it has no form to fall back on.

``wahub providers`` prints the matrix (aligned text, ``--json``, or
``--markdown``, which also rewrites the table of docs/choosing-a-provider.md
between ``MARKERS``); the documentation's test compares that table with the
installed providers through ``read_markdown`` and ``differences``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wahub.core.canonical.fit import Capabilities, adapt
from wahub.core.canonical.validate import INTERACTIVE_TYPES, MESSAGE_TYPES, parse_message
from wahub.core.errors import InvalidMessage
from wahub.core.models import OutgoingMessage

#: The rows of the matrix: every message type, with ``interactive`` split into its subtypes.
KINDS: tuple[str, ...] = (
    *(kind for kind in MESSAGE_TYPES if kind != "interactive"),
    *(f"interactive.{sub}" for sub in INTERACTIVE_TYPES),
)
#: The row telling what happens to more reply buttons than the provider allows.
EXTRA_BUTTONS = "extra buttons"
OUTCOMES = ("sent", "list", "text", "refused")
#: How the Markdown table and the terminal show each outcome.
SYMBOLS = {"sent": "yes", "list": "as list", "text": "as text", "refused": "no"}
#: Names of the limits, by ``Capabilities`` field; a field missing here is shown by its own name.
LIMIT_NAMES = {
    "max_text": "text characters",
    "max_caption": "caption characters",
    "max_buttons": "reply buttons",
    "max_button_title": "button title characters",
    "max_button_id": "button id characters",
    "max_list_rows": "list rows",
    "max_list_sections": "list sections",
    "max_row_title": "row title characters",
    "max_row_description": "row description characters",
    "max_row_id": "row id characters",
    "max_section_title": "section title characters",
    "max_list_button": "list button characters",
    "max_header_text": "header characters",
    "max_interactive_body": "interactive body characters",
    "max_footer": "footer characters",
    "max_cta_text": "link button characters",
    "max_contacts": "contacts per message",
}
MARKERS = ("<!-- capabilities:start -->", "<!-- capabilities:end -->")

_LINK = "https://example.com/file"
_MEDIA = frozenset(("image", "video", "audio", "document", "sticker"))
_TO = "15550000001"


@dataclass(frozen=True)
class Support:
    """What becomes of one kind of message on one provider."""

    #: One of ``OUTCOMES``.
    outcome: str
    #: Why, in a few words (the refusal's reason, or what the fallback keeps).
    note: str = ""


def _media(kind: str) -> dict[str, Any]:
    media: dict[str, Any] = {"link": _LINK}
    if kind in ("image", "video", "document"):
        media["caption"] = "A caption"
    return media


def _buttons(count: int) -> dict[str, Any]:
    buttons = [{"type": "reply", "reply": {"id": f"b{n}", "title": f"Choice {n}"}} for n in range(1, count + 1)]
    return {"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": buttons}}


_INTERACTIVE: dict[str, Callable[[], dict[str, Any]]] = {
    "button": lambda: _buttons(1),
    "list": lambda: {
        "type": "list",
        "body": {"text": "Pick one"},
        "action": {"button": "Options", "sections": [{"rows": [{"id": "r1", "title": "Row"}]}]},
    },
    "cta_url": lambda: {
        "type": "cta_url",
        "body": {"text": "See it"},
        "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": _LINK}},
    },
    "flow": lambda: {
        "type": "flow",
        "body": {"text": "Fill it in"},
        "action": {"name": "flow", "parameters": {"flow_cta": "Start", "flow_id": "1"}},
    },
}
_CONTENT: dict[str, Callable[[], Any]] = {
    "text": lambda: {"body": "Hello"},
    **{kind: functools.partial(_media, kind) for kind in ("image", "video", "audio", "document", "sticker")},
    "location": lambda: {"latitude": 52.37, "longitude": 4.89, "name": "Office"},
    "contacts": lambda: [{"name": {"formatted_name": "Ana"}, "phones": [{"phone": "+15550000002"}]}],
    "reaction": lambda: {"message_id": "wamid.example", "emoji": "👍"},
    "template": lambda: {"name": "order_update", "language": {"code": "en"}},
    "mark_read": lambda: {"message_id": "wamid.example"},
}


def sample(kind: str, *, buttons: int = 1) -> OutgoingMessage:
    """A small valid message of ``kind`` (``"image"``, ``"interactive.list"``...);
    ``buttons`` reply buttons for ``interactive.button``."""
    base, _, sub = kind.partition(".")
    if base == "interactive":
        body: Any = _buttons(buttons) if sub == "button" else _INTERACTIVE[sub]()
    else:
        body = _CONTENT[base]()
    return parse_message({"to": _TO, "type": base, base: body})


def _kind_of(message: OutgoingMessage) -> str:
    if message.type == "interactive":
        return f"interactive.{message.content['interactive']['type']}"
    return message.type


def _fit(message: OutgoingMessage, caps: Capabilities) -> Support:
    try:
        fitted = adapt(message, caps)
    except InvalidMessage as exc:
        return Support("refused", exc.message)
    if _kind_of(fitted) == _kind_of(message):
        return Support("sent")
    if fitted.type == "text":
        note = "sent by link, as its caption and link; by media id refused" if message.type in _MEDIA else ""
        return Support("text", note or "as the text a person would read")
    return Support("list", f"as a list of at most {caps.max_list_rows} rows")


def kind_support(caps: Capabilities) -> dict[str, Support]:
    """What becomes of each of ``KINDS`` (and of ``EXTRA_BUTTONS``) on a provider with ``caps``."""
    support = {kind: _fit(sample(kind), caps) for kind in KINDS}
    if support["interactive.button"].outcome == "sent":
        support[EXTRA_BUTTONS] = _fit(sample("interactive.button", buttons=caps.max_buttons + 1), caps)
    else:
        support[EXTRA_BUTTONS] = support["interactive.button"]
    return support


def limits(caps: Capabilities) -> dict[str, int]:
    """The provider's limits, by ``Capabilities`` field name."""
    return {f.name: getattr(caps, f.name) for f in dataclasses.fields(caps) if f.name.startswith("max_")}


def limit_name(field: str) -> str:
    return LIMIT_NAMES.get(field, field.removeprefix("max_").replace("_", " "))


def as_json(providers: Mapping[str, Capabilities]) -> dict[str, Any]:
    """The matrix for machines: per platform, each kind's outcome and note, and the limits."""
    return {
        "outcomes": list(OUTCOMES),
        "providers": {
            platform: {
                "kinds": {kind: dataclasses.asdict(found) for kind, found in kind_support(caps).items()},
                "limits": limits(caps),
            }
            for platform, caps in sorted(providers.items())
        },
    }


def rows(providers: Mapping[str, Capabilities]) -> tuple[list[str], list[list[str]]]:
    """The matrix as a table: the header (``""`` then the platforms, sorted) and
    one row per kind, ``EXTRA_BUTTONS`` and limit, each cell a ``SYMBOLS`` word or a number."""
    platforms = sorted(providers)
    support = {platform: kind_support(providers[platform]) for platform in platforms}
    numbers = {platform: limits(providers[platform]) for platform in platforms}
    body = [[kind, *(SYMBOLS[support[p][kind].outcome] for p in platforms)] for kind in (*KINDS, EXTRA_BUTTONS)]
    fields = list(dict.fromkeys(name for p in platforms for name in numbers[p]))
    body += [[limit_name(name), *(str(numbers[p].get(name, "-")) for p in platforms)] for name in fields]
    return ["", *platforms], body


def as_text(providers: Mapping[str, Capabilities]) -> str:
    """The matrix as aligned plain text, with the notes of what is not sent as written."""
    header, body = rows(providers)
    table = [header, *body]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    notes = [
        f"{platform}: {kind}: {found.outcome}: {found.note}"
        for platform, caps in sorted(providers.items())
        for kind, found in kind_support(caps).items()
        if found.outcome != "sent" and found.note
    ]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def as_markdown(providers: Mapping[str, Capabilities]) -> str:
    """The matrix as a Markdown table (what docs/choosing-a-provider.md shows between ``MARKERS``)."""
    header, body = rows(providers)
    header = ["kind or limit", *header[1:]]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    lines += [_md_row([f"`{row[0]}`" if row[0] in KINDS else row[0], *row[1:]]) for row in body]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def replace_table(document: str, providers: Mapping[str, Capabilities]) -> str:
    """``document`` with the text between ``MARKERS`` replaced by ``as_markdown``;
    ``ValueError`` naming the marker when one is missing or they are out of order."""
    start, end = MARKERS
    before, found, rest = document.partition(start)
    if not found:
        raise ValueError(f"the document has no {start} line")
    _old, found, after = rest.partition(end)
    if not found:
        raise ValueError(f"the document has no {end} line after {start}")
    return f"{before}{start}\n{as_markdown(providers)}{end}{after}"


def read_markdown(document: str) -> dict[str, dict[str, str]]:
    """The table between ``MARKERS`` of ``document``: ``{platform: {row name: cell}}``
    (row names as ``rows`` gives them, without the backticks)."""
    start, end = MARKERS
    if start not in document or end not in document.split(start, 1)[1]:
        raise ValueError(f"the document has no table between {start} and {end}")
    table = document.split(start, 1)[1].split(end, 1)[0]
    lines = [line.strip() for line in table.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError("the table between the markers has no header")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    platforms = cells[0][1:]
    columns: dict[str, dict[str, str]] = {platform: {} for platform in platforms}
    for row in cells[2:]:
        name = row[0].strip("`")
        for platform, cell in zip(platforms, row[1:], strict=False):
            columns[platform][name] = cell
    return columns


def differences(documented: Mapping[str, Mapping[str, str]], providers: Mapping[str, Capabilities]) -> list[str]:
    """Where the documented table disagrees with ``providers``, one line per cell,
    for the platforms of ``providers`` that the table has a column for."""
    header, body = rows({platform: caps for platform, caps in providers.items() if platform in documented})
    found: list[str] = []
    for row in body:
        for platform, expected in zip(header[1:], row[1:], strict=True):
            shown = documented[platform].get(row[0])
            if shown != expected:
                said = "has no such row" if shown is None else f"says {shown!r}"
                found.append(f"{platform}: {row[0]}: the table {said}, CAPABILITIES give {expected!r}")
    documented_rows = {name for platform in header[1:] for name in documented[platform]}
    for name in sorted(documented_rows - {row[0] for row in body}):
        found.append(f"{name}: the table has this row, CAPABILITIES have no such kind or limit")
    return found
