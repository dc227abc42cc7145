"""The canonical outgoing message: what clients may send, and how it fits each provider."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from wahub.core.canonical.fit import CLOUD_API, Capabilities, adapt
from wahub.core.canonical.validate import INTERACTIVE_TYPES, MESSAGE_TYPES, parse_message
from wahub.core.errors import InvalidMessage
from wahub.core.models import OutgoingMessage

Json = dict[str, Any]

TEXT_ONLY = Capabilities(types=frozenset({"text"}))
NO_LISTS = Capabilities(types=CLOUD_API.types - {"interactive.list"})
HTTPS = "https://example.com/a.jpg"


def message(kind: str, body: Any, **envelope: Any) -> Json:
    return {"to": "15551234567", "type": kind, kind: body, **envelope}


def interactive(kind: str, action: Json, **extra: Any) -> Json:
    return message("interactive", {"type": kind, "body": {"text": "Pick one"}, "action": action, **extra})


def reply_buttons(count: int, title: str = "Choice {}", **extra: Any) -> Json:
    buttons = [{"type": "reply", "reply": {"id": f"b{n}", "title": title.format(n)}} for n in range(count)]
    return interactive("button", {"buttons": buttons}, **extra)


def rows(count: int, start: int = 0) -> list[Json]:
    return [{"id": f"r{n}", "title": f"Row {n}"} for n in range(start, start + count)]


def list_message(*sizes: int) -> Json:
    sections = [{"title": f"S{n}", "rows": rows(size, 10 * n)} for n, size in enumerate(sizes)]
    return interactive("list", {"button": "Choose", "sections": sections})


def invalid(data: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        parse_message(data)
    return info.value


def refused(data: Json, caps: Capabilities) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        adapt(parse_message(data), caps)
    return info.value


TEMPLATE = {
    "name": "order_update",
    "language": {"code": "en_US"},
    "components": [
        {"type": "header", "parameters": [{"type": "image", "image": {"id": "m1"}}]},
        {"type": "body", "parameters": [{"type": "text", "parameter_name": "order_id", "text": "42"}]},
        {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "X"}]},
    ],
}
VALID: list[tuple[str, Any]] = [
    ("template", {"name": "hello_world", "language": {"code": "en_US"}, "components": []}),
    ("text", {"body": "hi", "preview_url": True}),
    ("image", {"id": "m1", "caption": "a cat"}),
    ("video", {"link": "https://example.com/a.mp4", "caption": "clip"}),
    ("audio", {"id": "m2"}),
    ("document", {"link": "http://example.com/inv.pdf", "filename": "inv.pdf", "caption": "invoice"}),
    ("sticker", {"id": "m3"}),
    ("location", {"latitude": 37.75, "longitude": -122, "name": "HQ", "address": "1 Way"}),
    ("contacts", [{"name": {"formatted_name": "J S"}, "phones": [{"phone": "+1 650 555 1234", "type": "WORK"}]}]),
    ("reaction", {"message_id": "wamid.A", "emoji": ""}),
    ("interactive", reply_buttons(3, header={"type": "text", "text": "Hi"}, footer={"text": "f"})["interactive"]),
    ("template", TEMPLATE),
    ("mark_read", {"message_id": "wamid.A", "typing_indicator": True}),
]
VALID_INTERACTIVE: list[Json] = [
    reply_buttons(2),
    list_message(2, 1),
    interactive(
        "cta_url",
        {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://example.com"}},
        header={"type": "image", "image": {"link": HTTPS}},
    ),
    interactive("flow", {"name": "flow", "parameters": {"flow_cta": "Start", "flow_name": "signup"}}),
]


def test_every_type_has_a_valid_example() -> None:
    assert {kind for kind, _ in VALID} == set(MESSAGE_TYPES)
    assert [data["interactive"]["type"] for data in VALID_INTERACTIVE] == list(INTERACTIVE_TYPES)


@pytest.mark.parametrize(("kind", "body"), VALID, ids=[kind for kind, _ in VALID])
def test_parse_every_type(kind: str, body: Any) -> None:
    parsed = parse_message({"messaging_product": "whatsapp", **message(kind, body)})

    assert parsed == OutgoingMessage(to="15551234567", type=kind, content={kind: body})


@pytest.mark.parametrize("data", VALID_INTERACTIVE, ids=list(INTERACTIVE_TYPES))
def test_parse_every_interactive_subtype(data: Json) -> None:
    parsed = parse_message(data)

    assert (parsed.type, parsed.content) == ("interactive", {"interactive": data["interactive"]})
    assert adapt(parsed, CLOUD_API) is parsed


def test_context_and_envelope_fields_are_kept() -> None:
    data = message("text", {"body": "hi"}, context={"message_id": "wamid.X"}, biz_opaque_callback_data="cb-1")

    parsed = parse_message(data)

    assert parsed.context_id == "wamid.X"
    assert parsed.to_json() == data


@pytest.mark.parametrize(
    ("data", "typing"),
    [
        ({"messaging_product": "whatsapp", "to": "1555", "status": "read", "message_id": "wamid.A"}, None),
        ({"to": "1555", "status": "read", "message_id": "wamid.A", "typing_indicator": {"type": "text"}}, True),
    ],
)
def test_meta_read_receipt_becomes_mark_read(data: Json, typing: bool | None) -> None:
    parsed = parse_message(data)

    expected = {"message_id": "wamid.A", **({"typing_indicator": typing} if typing else {})}
    assert parsed == OutgoingMessage(to="1555", type="mark_read", content={"mark_read": expected})


def test_bsuid_recipient_is_accepted() -> None:
    assert parse_message({**message("text", {"body": "hi"}), "to": "US.13491208655302741918"}).to == (
        "US.13491208655302741918"
    )


TEXT = message("text", {"body": "hi"})
STRUCTURE_ERRORS: list[tuple[Any, str, str]] = [
    (["not", "an", "object"], "$", "must be a JSON object, not an array"),
    ({"type": "text", "text": {"body": "hi"}}, "to", "is required"),
    ({**TEXT, "to": "   "}, "to", "must not be blank"),
    ({**TEXT, "to": 15551234567}, "to", "must be a string, not a number"),
    ({**TEXT, "to": "1555\n1234"}, "to", "contains a control character"),
    ({**TEXT, "to": "1" * 129}, "to", "is 129 characters; at most 128"),
    ({"to": "1555", "text": {"body": "hi"}}, "type", "is required"),
    ({**TEXT, "type": "sms"}, "type", "is 'sms'; must be one of text, image"),
    ({"to": "1555", "type": "text"}, "text", "is required"),
    (message("text", "hi"), "text", "must be an object, not a string"),
    ({**TEXT, "image": {"id": "m1"}}, "image", "is not a field of a text message"),
    ({**TEXT, "context": {"message_id": ""}}, "context.message_id", "must not be blank"),
    ({**TEXT, "context": {"id": "wamid.X"}}, "context.id", "is not a field of context"),
    ({**TEXT, "messaging_product": "sms"}, "messaging_product", "must be 'whatsapp'"),
    ({**TEXT, "recipient_type": "broadcast"}, "recipient_type", "must be 'individual' or 'group'"),
    ({**TEXT, "biz_opaque_callback_data": "x" * 513}, "biz_opaque_callback_data", "is 513 characters; at most 512"),
    (message("text", {"body": ""}), "text.body", "must not be blank"),
    (message("text", {"body": "hi", "preview_url": "yes"}), "text.preview_url", "must be a boolean"),
    (message("image", {"caption": "x"}), "image", "needs exactly one of id or link"),
    (message("image", {"id": "m1", "link": HTTPS}), "image", "not both"),
    (message("image", {"link": "ftp://example.com/a.jpg"}), "image.link", "must be an http or https URL"),
    (message("sticker", {"id": "m1", "caption": "x"}), "sticker.caption", "not allowed for sticker"),
    (message("image", {"id": "m1", "filename": "a.jpg"}), "image.filename", "only for document"),
    (message("location", {"latitude": 91, "longitude": 0}), "location.latitude", "is 91; must be between -90 and 90"),
    (message("location", {"latitude": 0, "longitude": -181}), "location.longitude", "between -180 and 180"),
    (message("location", {"latitude": True, "longitude": 0}), "location.latitude", "must be a number, not a boolean"),
    (message("location", {"latitude": 0}), "location.longitude", "is required"),
    (message("contacts", []), "contacts", "must not be empty"),
    (message("contacts", {"name": {"formatted_name": "J"}}), "contacts", "must be an array"),
    (message("contacts", [{"name": {}}]), "contacts[0].name.formatted_name", "is required"),
    (message("reaction", {"message_id": "wamid.A"}), "reaction.emoji", "is required"),
    (message("mark_read", {"message_id": "wamid.A", "typing_indicator": 1}), "mark_read.typing_indicator", "boolean"),
    (interactive("carousel", {}), "interactive.type", "must be one of button, list, cta_url, flow"),
    ({**reply_buttons(1), "interactive": {"type": "button", "action": {}}}, "interactive.body", "is required"),
    (interactive("button", {"buttons": []}), "interactive.action.buttons", "must not be empty"),
    (interactive("button", {"buttons": ["Yes"]}), "interactive.action.buttons[0]", "must be an object"),
    (reply_buttons(2, "Same"), "interactive.action.buttons[1].reply.title", "repeats the title of button 0"),
    (
        interactive("button", {"buttons": [{"type": "url", "reply": {"id": "a", "title": "A"}}]}),
        "interactive.action.buttons[0].type",
        "must be one of reply",
    ),
    (reply_buttons(2, header={"type": "sticker"}), "interactive.header.type", "is 'sticker'"),
    (reply_buttons(2, header={"type": "image", "image": {}}), "interactive.header.image", "id or link"),
    (reply_buttons(2, footer={}), "interactive.footer.text", "is required"),
    (list_message(0), "interactive.action.sections[0].rows", "must not be empty"),
    (interactive("list", {"sections": [{"rows": rows(1)}]}), "interactive.action.button", "is required"),
    (
        interactive("list", {"button": "Choose", "sections": [{"rows": rows(1)}, {"rows": rows(1, 5)}]}),
        "interactive.action.sections[0].title",
        "is required",
    ),
    (
        interactive("cta_url", {"name": "open", "parameters": {"display_text": "Open", "url": HTTPS}}),
        "interactive.action.name",
        "is 'open'; must be one of cta_url",
    ),
    (
        interactive("cta_url", {"name": "cta_url", "parameters": {"display_text": "Go", "url": "javascript:x"}}),
        "interactive.action.parameters.url",
        "http or https URL",
    ),
    (
        interactive("flow", {"name": "flow", "parameters": {"flow_cta": "Go", "flow_id": "1", "flow_name": "a"}}),
        "interactive.action.parameters",
        "exactly one of flow_id or flow_name, not both",
    ),
    (
        interactive("flow", {"name": "flow", "parameters": {"flow_id": "1"}}),
        "interactive.action.parameters.flow_cta",
        "is required",
    ),
    (
        interactive("flow", {"name": "flow", "parameters": {"flow_cta": "Go", "flow_id": "1", "data": {1, 2}}}),
        "interactive",
        "is not plain JSON",
    ),
    (message("template", {"name": "t", "language": {}}), "template.language.code", "is required"),
    (message("template", {**TEMPLATE, "components": {}}), "template.components", "must be an array"),
    (message("template", {**TEMPLATE, "components": [{"type": "footer"}]}), "template.components[0].type", "footer"),
    (
        message("template", {**TEMPLATE, "components": [{"type": "button", "index": 0}]}),
        "template.components[0].sub_type",
        "is required",
    ),
    (
        message("template", {**TEMPLATE, "components": [{"type": "button", "sub_type": "url", "index": True}]}),
        "template.components[0].index",
        "a number or a string",
    ),
    (
        message("template", {**TEMPLATE, "components": [{"type": "body", "parameters": [{"type": "emoji"}]}]}),
        "template.components[0].parameters[0].type",
        "is 'emoji'",
    ),
    (
        message("template", {**TEMPLATE, "components": [{"type": "body", "parameters": [{"type": "text"}]}]}),
        "template.components[0].parameters[0].text",
        "is required",
    ),
    ({"to": "1555", "status": "delivered", "message_id": "wamid.A"}, "status", "only 'read' can be sent"),
    ({"to": "1555", "status": "read", "message_id": "w", "typing_indicator": {}}, "typing_indicator", '"text"'),
    ({"to": "1555", "status": "read", "message_id": "w", "type": "text"}, "type", "is not a field of a read receipt"),
]


@pytest.mark.parametrize(("data", "field", "reason"), STRUCTURE_ERRORS, ids=[e[1] for e in STRUCTURE_ERRORS])
def test_structural_errors_name_the_field(data: Any, field: str, reason: str) -> None:
    error = invalid(data)

    assert error.field == field
    assert reason in error.message
    assert str(error) == f"{field}: {error.message}"


def test_fourth_button_with_missing_title_names_its_path() -> None:
    data = reply_buttons(4)
    del data["interactive"]["action"]["buttons"][3]["reply"]["title"]

    assert str(invalid(data)) == "interactive.action.buttons[3].reply.title: is required"


def test_input_is_not_mutated_and_content_is_a_copy() -> None:
    data = reply_buttons(4, header={"type": "text", "text": "Hi"})
    data["interactive"]["action"]["extra"] = ("a", "b")
    before = copy.deepcopy(data)

    parsed = parse_message(data)
    adapted = adapt(parsed, CLOUD_API)

    assert data == before
    assert parsed.content["interactive"]["action"]["extra"] == ["a", "b"]
    assert parsed.content["interactive"] is not data["interactive"]
    assert parsed.content["interactive"]["type"] == "button"
    assert adapted.content["interactive"]["type"] == "list"


def with_body(text: str) -> Json:
    return message("text", {"body": text})


def with_button_title(title: str) -> Json:
    return interactive("button", {"buttons": [{"type": "reply", "reply": {"id": "a", "title": title}}]})


def with_row(**row: str) -> Json:
    return interactive("list", {"button": "Choose", "sections": [{"rows": [{"id": "r", "title": "R", **row}]}]})


LIMITS: list[tuple[Json, str, str]] = [
    (with_body("x" * 4097), "text.body", "is 4097 characters; at most 4096"),
    (message("image", {"id": "m", "caption": "c" * 1025}), "image.caption", "is 1025 characters; at most 1024"),
    (message("document", {"id": "m", "caption": "c" * 1025}), "document.caption", "at most 1024"),
    (with_button_title("t" * 21), "interactive.action.buttons[0].reply.title", "is 21 characters; at most 20"),
    (list_message(6, 5), "interactive.action.sections[1].rows[4]", "is number 11; at most 10 rows across all"),
    (list_message(*[1] * 11), "interactive.action.sections[10]", "at most 10 sections"),
    (with_row(title="t" * 25), "interactive.action.sections[0].rows[0].title", "at most 24"),
    (with_row(description="d" * 73), "interactive.action.sections[0].rows[0].description", "at most 72"),
    (with_row(id="i" * 201), "interactive.action.sections[0].rows[0].id", "at most 200"),
    (reply_buttons(2, header={"type": "text", "text": "h" * 61}), "interactive.header.text", "at most 60"),
    (reply_buttons(2, footer={"text": "f" * 61}), "interactive.footer.text", "at most 60"),
    (message("contacts", [{"name": {"formatted_name": f"P{n}"}} for n in range(6)]), "contacts[5]", "at most 5"),
    (
        interactive("cta_url", {"name": "cta_url", "parameters": {"display_text": "d" * 21, "url": HTTPS}}),
        "interactive.action.parameters.display_text",
        "at most 20",
    ),
]


@pytest.mark.parametrize(("data", "field", "reason"), LIMITS, ids=[limit[1] for limit in LIMITS])
def test_cloud_api_limits_are_enforced(data: Json, field: str, reason: str) -> None:
    error = refused(data, CLOUD_API)

    assert error.field == field
    assert reason in error.message


@pytest.mark.parametrize(
    "data",
    [with_body("x" * 4096), with_button_title("t" * 20), list_message(6, 4), reply_buttons(3)],
    ids=["text", "button title", "list rows", "buttons"],
)
def test_message_at_the_limits_is_returned_unchanged(data: Json) -> None:
    parsed = parse_message(data)

    assert adapt(parsed, CLOUD_API) is parsed


def test_four_buttons_become_a_list() -> None:
    data = reply_buttons(4, header={"type": "text", "text": "Hi"}, footer={"text": "Thanks"})
    parsed = parse_message({**data, "context": {"message_id": "wamid.Q"}})

    adapted = adapt(parsed, CLOUD_API)

    assert adapted.type == "interactive"
    assert adapted.context_id == "wamid.Q"
    assert adapted.content["interactive"] == {
        "type": "list",
        "header": {"type": "text", "text": "Hi"},
        "body": {"text": "Pick one"},
        "footer": {"text": "Thanks"},
        "action": {
            "button": "Options",
            "sections": [{"rows": [{"id": f"b{n}", "title": f"Choice {n}"} for n in range(4)]}],
        },
    }


def test_code_built_reply_buttons_become_a_list() -> None:
    built = OutgoingMessage.reply_buttons("1555", "Pick", ["A", "B", "C", "D"])

    rows_sent = adapt(built, CLOUD_API).content["interactive"]["action"]["sections"][0]["rows"]

    assert [row["title"] for row in rows_sent] == ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("data", "caps", "field", "reason"),
    [
        (reply_buttons(11), CLOUD_API, "interactive.action.buttons", "has 11 buttons; at most 3, or 10 as a list"),
        (reply_buttons(4), NO_LISTS, "interactive.action.buttons", "no lists"),
        (
            reply_buttons(4, header={"type": "image", "image": {"link": HTTPS}}),
            CLOUD_API,
            "interactive.action.buttons",
            "text header",
        ),
        (reply_buttons(4, "{}" + "t" * 24), CLOUD_API, "interactive.action.buttons[0].reply.title", "at most 24"),
    ],
    ids=["too many for a list", "no lists", "media header", "title too long for a row"],
)
def test_buttons_that_cannot_become_a_list_are_refused(data: Json, caps: Capabilities, field: str, reason: str) -> None:
    error = refused(data, caps)

    assert error.field == field
    assert reason in error.message


CONTACT = {"name": {"formatted_name": "Ana"}, "phones": [{"phone": "+1 650 555 1234"}, {"phone": "+1 650 555 9999"}]}
AS_TEXT: list[tuple[Json, Capabilities, str]] = [
    (
        message("location", {"latitude": 37.75, "longitude": -122.42, "name": "HQ", "address": "1 Way"}),
        TEXT_ONLY,
        "HQ\n1 Way\nhttps://maps.google.com/?q=37.75,-122.42",
    ),
    (
        message("contacts", [CONTACT, {"name": {"formatted_name": "Bo"}}]),
        TEXT_ONLY,
        "Ana: +1 650 555 1234, +1 650 555 9999\nBo",
    ),
    (
        interactive(
            "list",
            {"button": "Choose", "sections": [{"rows": [{"id": "s", "title": "Small", "description": "10 cm"}]}]},
            footer={"text": "Reply with a number"},
        ),
        NO_LISTS,
        "Pick one\n\n1. Small: 10 cm\n\nReply with a number",
    ),
    (list_message(1, 2), NO_LISTS, "Pick one\n\n1. Row 0\n2. Row 10\n3. Row 11"),
    (
        reply_buttons(2, header={"type": "text", "text": "Hello"}),
        TEXT_ONLY,
        "Hello\n\nPick one\n\n1. Choice 0\n2. Choice 1",
    ),
    (
        interactive("cta_url", {"name": "cta_url", "parameters": {"display_text": "Open", "url": HTTPS}}),
        TEXT_ONLY,
        f"Pick one\n\nOpen: {HTTPS}",
    ),
    (message("image", {"link": HTTPS, "caption": "A cat"}), TEXT_ONLY, f"A cat\n{HTTPS}"),
    (message("audio", {"link": HTTPS}), TEXT_ONLY, HTTPS),
]


@pytest.mark.parametrize(
    ("data", "caps", "text"),
    AS_TEXT,
    ids=["location", "contacts", "list", "sections", "buttons", "cta", "image", "audio"],
)
def test_unsupported_kinds_fall_back_to_text_keeping_the_reply_to(data: Json, caps: Capabilities, text: str) -> None:
    parsed = parse_message({**data, "context": {"message_id": "wamid.Q"}, "biz_opaque_callback_data": "cb"})

    adapted = adapt(parsed, caps)

    assert adapted == OutgoingMessage(
        to=parsed.to,
        type="text",
        content={"text": {"body": text}, "biz_opaque_callback_data": "cb"},
        context_id="wamid.Q",
    )


@pytest.mark.parametrize(
    ("data", "caps", "field", "reason"),
    [
        (message("image", {"id": "m1"}), TEXT_ONLY, "image.id", "media by id cannot be shown as text"),
        (
            reply_buttons(2, header={"type": "video", "video": {"id": "m1"}}),
            TEXT_ONLY,
            "interactive.header.video.id",
            "media by id",
        ),
        (VALID_INTERACTIVE[3], TEXT_ONLY, "interactive.type", "flow is not supported by this provider"),
        (message("template", TEMPLATE), TEXT_ONLY, "type", "template is not supported by this provider"),
        (message("reaction", {"message_id": "w", "emoji": "👍"}), TEXT_ONLY, "type", "reaction is not supported"),
        (message("mark_read", {"message_id": "w"}), TEXT_ONLY, "type", "mark_read is not supported"),
        (
            message("location", {"latitude": 1, "longitude": 2}),
            Capabilities(types=frozenset({"image"})),
            "type",
            "location is not supported by this provider, nor text to fall back on",
        ),
        (
            interactive("list", {"button": "Choose", "sections": [{"rows": rows(1)}]}),
            Capabilities(types=frozenset({"text"}), max_text=10),
            "interactive",
            "is 18 characters as text; at most 10",
        ),
    ],
    ids=["image by id", "header by id", "flow", "template", "reaction", "mark_read", "no text", "too long as text"],
)
def test_kinds_without_a_text_form_are_refused(data: Json, caps: Capabilities, field: str, reason: str) -> None:
    error = refused(data, caps)

    assert error.field == field
    assert reason in error.message


def test_subtypes_need_their_type() -> None:
    subtype_only = Capabilities(types=frozenset({"text", "interactive.list"}))

    assert CLOUD_API.supports("interactive.flow")
    assert CLOUD_API.supports("mark_read")
    assert not subtype_only.supports("interactive.list")
    assert not NO_LISTS.supports("interactive.list")
    assert NO_LISTS.supports("interactive.button")


def test_adapt_checks_messages_built_in_code() -> None:
    broken = OutgoingMessage(to="1555", type="text", content={"text": {}})

    with pytest.raises(InvalidMessage, match=r"^text\.body: is required$"):
        adapt(broken, CLOUD_API)
