"""The built-in rules router."""

from __future__ import annotations

import pytest
import voluptuous as vol

from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.plugins.router import ROUTER_SCHEMA, answer

CONFIG = ROUTER_SCHEMA(
    {
        "rules": [
            {"match": {"keyword": ["hi", "hello", "привет"]}, "reply": "Hello! How can I help?"},
            {"match": {"regex": r"order\s+(\d+)"}, "reply": "Order {1} is on its way, {name}."},
            {"match": {"keyword": "menu"}, "reply": {"text": "Pick one", "buttons": ["Hours", "Talk to us"]}},
        ],
        "default_reply": "Sorry, I did not understand.",
    }
)


def message(text: str) -> InboundMessage:
    return InboundMessage(
        provider="sandbox",
        external_id="m",
        sender="15551234567",
        type="text",
        content={"text": {"body": text}},
        timestamp=0.0,
        sender_name="Ann",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HELLO there", "Hello! How can I help?"),
        ("Привет!", "Hello! How can I help?"),
        ("ПРИВЕТСТВУЮ", "Sorry, I did not understand."),  # whole words only
        ("this is high", "Sorry, I did not understand."),
        ("where is my Order  4521?", "Order 4521 is on its way, Ann."),
    ],
)
def test_rules_answer_in_order_with_default(text: str, expected: str) -> None:
    assert answer(CONFIG, message(text)) == OutgoingMessage.text("15551234567", expected)


def test_reply_buttons() -> None:
    reply = answer(CONFIG, message("menu please"))
    assert reply == OutgoingMessage.reply_buttons("15551234567", "Pick one", ["Hours", "Talk to us"])


def test_tapped_button_title_is_matched() -> None:
    tapped = InboundMessage(
        provider="sandbox",
        external_id="m",
        sender="1",
        type="interactive",
        timestamp=0.0,
        content={"interactive": {"type": "button_reply", "button_reply": {"id": "Hours", "title": "hello"}}},
    )
    assert answer(CONFIG, tapped) == OutgoingMessage.text("1", "Hello! How can I help?")


def test_keyword_match_of_a_rule_with_regex_groups_leaves_them_empty() -> None:
    config = ROUTER_SCHEMA({"rules": [{"match": {"keyword": "track", "regex": r"order (\d+)"}, "reply": "[{1}]"}]})
    assert answer(config, message("track please")) == OutgoingMessage.text("15551234567", "[]")
    assert answer(config, message("order 42")) == OutgoingMessage.text("15551234567", "[42]")


def test_default_reply_placeholders_are_checked_at_start_up() -> None:
    with pytest.raises(vol.Invalid, match=r"placeholder \{1\} is not available"):
        ROUTER_SCHEMA({"default_reply": "Hi {1}"})
    config = ROUTER_SCHEMA({"default_reply": "Sorry {name}, {0}?"})
    assert answer(config, message("x")) == OutgoingMessage.text("15551234567", "Sorry Ann, ?")


def test_no_default_reply_means_silence() -> None:
    assert answer(ROUTER_SCHEMA({}), message("anything")) is None


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"match": {"regex": "order ("}, "reply": "x"}, "invalid regular expression"),
        ({"match": {"regex": r"(\d+)"}, "reply": "{2}"}, "placeholder {2} is not available"),
        ({"match": {"keyword": "a"}, "reply": {"text": "{1}"}}, "placeholder {1} is not available"),
        ({"match": {"keyword": "a"}, "reply": "{"}, "literal braces"),
        ({"match": {}, "reply": "x"}, "give 'keyword' or 'regex'"),
        ({"match": {"keyword": "a"}, "reply": {"text": "t", "buttons": ["1", "2", "3", "4"]}}, "at most 3"),
        ({"match": {"keyword": "a"}, "reply": {"text": "t", "buttons": ["x" * 21]}}, "1 to 20 characters"),
    ],
)
def test_bad_rules_are_refused_at_start_up(rule: dict[str, object], error: str) -> None:
    with pytest.raises(vol.Invalid) as caught:
        ROUTER_SCHEMA({"rules": [rule]})
    assert error in str(caught.value)
