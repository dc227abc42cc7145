"""A template message's parameters against the stored template (Meta's listing
shape): every rule and the message it refuses with, then the same refusals
end to end, made before the provider is ever called."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from wahub.core.canonical.validate import parse_message
from wahub.core.errors import InvalidMessage
from wahub.core.policy.template_params import check_parameters, expected_parameters
from wahub.core.storage.policy import Template

from .test_engine import USER, Engine, engine_for

ORDER = [
    {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
    {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships on {{3}}. Thanks, {{1}}!"},
    {"type": "FOOTER", "text": "Reply STOP to opt out"},
    {
        "type": "BUTTONS",
        "buttons": [
            {"type": "QUICK_REPLY", "text": "Cancel"},
            {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}"},
            {"type": "URL", "text": "Shop", "url": "https://shop.example/"},
        ],
    },
]
NAMED = [{"type": "BODY", "text": "Hi {{name}}, order {{order_id}} is on its way, {{name}}."}]
NAMED_HEADER = [{"type": "HEADER", "format": "TEXT", "text": "Order {{order_id}}"}, *NAMED]
PHOTO = [{"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW"]}}, {"type": "BODY", "text": "Hi"}]
PLAIN = [{"type": "BODY", "text": "Your appointment is confirmed."}]


def text(value: str, name: str | None = None) -> dict[str, Any]:
    return {"type": "text", "text": value, **({"parameter_name": name} if name else {})}


def body(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "body", "parameters": list(parameters)}


def header(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "header", "parameters": list(parameters)}


def url_button(index: Any, suffix: str = "A42") -> dict[str, Any]:
    return {"type": "button", "sub_type": "url", "index": index, "parameters": [text(suffix)]}


IMAGE = {"type": "image", "image": {"link": "https://shop.example/p.jpg"}}
GOOD_ORDER = [header(text("A42")), body(text("Ana"), text("A42"), text("May 3")), url_button(1)]


def template(*components: dict[str, Any], name: str = "order_update") -> dict[str, Any]:
    """A canonical template body, checked for its shape as a client's would be."""
    part: dict[str, Any] = {"name": name, "language": {"code": "en_US"}}
    if components:
        part["components"] = list(components)
    message = {"to": USER, "type": "template", "template": part}
    parsed: dict[str, Any] = parse_message(message).content["template"]
    return parsed


def refusal(stored: list[Any], *components: dict[str, Any]) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        check_parameters(template(*components), stored)
    return info.value


def test_the_stored_components_say_what_a_send_must_give() -> None:
    expected = expected_parameters(ORDER)
    assert (expected.header_format, expected.header, expected.body) == ("TEXT", ("1",), ("1", "2", "3"))
    assert [(button.type, button.variable) for button in expected.buttons] == [
        ("QUICK_REPLY", False),
        ("URL", True),
        ("URL", False),
    ]
    assert expected_parameters(NAMED).body == ("name", "order_id")
    assert expected_parameters(PHOTO).header_format == "IMAGE"


@pytest.mark.parametrize(
    ("stored", "components"),
    [
        (ORDER, GOOD_ORDER),
        # Buttons by index as a string, as Meta's examples also write it; a quick reply may carry a payload.
        (
            ORDER,
            [
                *GOOD_ORDER[:2],
                url_button("1"),
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": 0,
                    "parameters": [{"type": "payload", "payload": "X"}],
                },
            ],
        ),
        (NAMED, [body(text("42", "order_id"), text("Ana", "name"))]),
        (NAMED_HEADER, [header(text("42", "order_id")), body(text("Ana", "name"), text("42", "order_id"))]),
        (PHOTO, [header(IMAGE)]),
        (PLAIN, []),
        # Currency and date parameters fill a placeholder as text does.
        (
            [{"type": "BODY", "text": "You owe {{1}} by {{2}}"}],
            [
                body(
                    {"type": "currency", "currency": {"fallback_value": "$5", "code": "USD", "amount_1000": 5000}},
                    {"type": "date_time", "date_time": {"fallback_value": "May 3"}},
                )
            ],
        ),
    ],
)
def test_parameters_that_fit_the_template_pass(stored: list[Any], components: list[dict[str, Any]]) -> None:
    check_parameters(template(*components), stored)


@pytest.mark.parametrize(
    ("stored", "components", "field", "message"),
    [
        (
            ORDER,
            [header(text("A42")), body(text("Ana")), url_button(1)],
            "template.components[1]",
            "body parameter {{2}} is missing (the body has {{1}}, {{2}}, {{3}})",
        ),
        (
            ORDER,
            [header(text("A42")), body(text("Ana"), text("A42"), text("May 3"), text("extra")), url_button(1)],
            "template.components[1].parameters[3]",
            "body has 4 parameters; the template's body has 3 ({{1}}, {{2}}, {{3}})",
        ),
        (
            ORDER,
            [body(text("Ana"), text("A42"), text("May 3")), url_button(1)],
            "template.components",
            "header parameter {{1}} is missing (the header has {{1}})",
        ),
        (
            PLAIN,
            [body(text("Ana"))],
            "template.components[0].parameters[0]",
            "body has 1 parameter; the template's body has none",
        ),
        (
            PLAIN,
            [header(text("Ana"))],
            "template.components[0].parameters[0]",
            "header has 1 parameter; the template's header has none",
        ),
        (
            ORDER,
            [header(text("A42")), body(text("Ana", "name"), text("A42"), text("May 3")), url_button(1)],
            "template.components[1].parameters[0].parameter_name",
            "body parameter 1 is named 'name', but the template's body parameters are positional",
        ),
        (
            NAMED,
            [body(text("42", "ordr_id"), text("Ana", "name"))],
            "template.components[0].parameters[0].parameter_name",
            "unknown named parameter 'ordr_id' (the template has name, order_id)",
        ),
        (
            NAMED,
            [body(text("Ana", "name"))],
            "template.components[0]",
            "body parameter {{order_id}} is missing (the body has name, order_id)",
        ),
        (
            NAMED,
            [body(text("Ana", "name"), text("42"))],
            "template.components[0].parameters[1]",
            "body parameter 2 needs a parameter_name: the template's parameters are named (name, order_id)",
        ),
        (
            NAMED,
            [body(text("Ana", "name"), text("Bo", "name"))],
            "template.components[0].parameters[1].parameter_name",
            "named parameter 'name' is given twice",
        ),
        (
            NAMED_HEADER,
            [body(text("Ana", "name"), text("42", "order_id"))],
            "template.components",
            "header parameter {{order_id}} is missing (the header has order_id)",
        ),
        (
            PHOTO,
            [header(text("A42"))],
            "template.components[0].parameters[0].type",
            "header needs an image parameter, got text",
        ),
        (PHOTO, [], "template.components", "header needs an image parameter, got none"),
        (
            PHOTO,
            [header(IMAGE, IMAGE)],
            "template.components[0].parameters[1]",
            "header takes one image parameter, got 2",
        ),
        (
            [{"type": "HEADER", "format": "DOCUMENT"}, {"type": "BODY", "text": "Your invoice"}],
            [header(IMAGE)],
            "template.components[0].parameters[0].type",
            "header needs a document parameter, got image",
        ),
        (
            ORDER,
            GOOD_ORDER[:2],
            "template.components",
            "button 1 is a URL button with a variable: it needs a button component with sub_type url and index 1",
        ),
        (
            ORDER,
            [*GOOD_ORDER[:2], {"type": "button", "sub_type": "quick_reply", "index": 1, "parameters": [text("x")]}],
            "template.components[2].sub_type",
            "button 1 is a URL button with a variable: sub_type must be url, not 'quick_reply'",
        ),
        (
            ORDER,
            [*GOOD_ORDER[:2], {"type": "button", "sub_type": "url", "index": 1, "parameters": [IMAGE]}],
            "template.components[2].parameters",
            "button 1 needs one text parameter: the end of its URL",
        ),
        (
            ORDER,
            [*GOOD_ORDER, url_button(5)],
            "template.components[3].index",
            "the template has no button 5 (it has 3 buttons)",
        ),
        (PLAIN, [url_button(0)], "template.components[0].index", "the template has no button 0 (it has no buttons)"),
        (ORDER, [*GOOD_ORDER, url_button("1")], "template.components[3].index", "button 1 is given twice"),
        (ORDER, [*GOOD_ORDER[:2], url_button("first")], "template.components[2].index", "not 'first'"),
        (
            ORDER,
            [*GOOD_ORDER, body(text("Ana"), text("A42"), text("May 3"))],
            "template.components[3]",
            "a second body component; a template message has one body",
        ),
    ],
)
def test_parameters_that_do_not_fit_are_refused_naming_the_parameter(
    stored: list[Any], components: list[dict[str, Any]], field: str, message: str
) -> None:
    problem = refusal(stored, *components)
    assert problem.field == field
    assert message in problem.message


def test_a_blank_text_parameter_is_refused_with_the_messages_shape() -> None:
    with pytest.raises(InvalidMessage) as info:
        template(body(text("Ana"), text("  ")))
    assert (info.value.field, info.value.message) == ("template.components[0].parameters[1].text", "must not be blank")


def test_stored_components_that_are_not_objects_are_skipped() -> None:
    check_parameters(template(body(text("Ana"))), ["junk", {"type": "BODY", "text": "Hi {{1}}"}, None])


# -- end to end: refused before the provider is called ------------------------------


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    async for running in engine_for(database_url, pair_limit=None):
        await running.daemon.hub.storage.policy.upsert_template(
            "fake", Template("order_update", "en_US", "UTILITY", "APPROVED"), components=ORDER
        )
        yield running


def _send(*components: dict[str, Any]) -> dict[str, Any]:
    return {
        "to": USER,
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "en_US"}, "components": list(components)},
    }


async def test_a_mismatch_is_refused_before_any_provider_call_and_a_match_is_sent(engine: Engine) -> None:
    status, answer = await engine.send(_send(header(text("A42")), body(text("Ana")), url_button(1)))
    assert status == 422 and answer["error"]["code"] == "invalid_message"
    assert answer["error"]["message"] == (
        "template.components[1]: body parameter {{2}} is missing (the body has {{1}}, {{2}}, {{3}})"
        " (template 'order_update', en_US)"
    )
    status, answer = await engine.send(_send(*GOOD_ORDER[:2]))
    assert status == 422 and "button 1 is a URL button with a variable" in answer["error"]["message"]
    assert engine.server.calls == []
    assert await engine.daemon.hub.storage.messages.history("fake", USER) == []

    status, answer = await engine.send(_send(*GOOD_ORDER))
    assert status == 202, answer
    await engine.status_becomes(answer["id"], "delivered")
    [call] = engine.server.calls
    assert call.body["template"]["components"] == GOOD_ORDER


async def test_a_template_stored_without_components_is_left_to_the_provider(engine: Engine) -> None:
    await engine.daemon.hub.storage.policy.upsert_template("fake", Template("welcome", "en_US", "UTILITY", "APPROVED"))
    welcome = {"name": "welcome", "language": {"code": "en_US"}, "components": [body(text("x"))]}
    status, answer = await engine.send({"to": USER, "type": "template", "template": welcome})
    assert status == 202, answer
    await engine.status_becomes(answer["id"], "delivered")
