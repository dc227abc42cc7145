"""The built-in rules router."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import voluptuous as vol

from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.plugins.router import ROUTER_SCHEMA, languages, pick_rule, render

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


def answer(
    config: Mapping[str, Any], *messages: InboundMessage, language: str | None = None, default: str = "en"
) -> OutgoingMessage | None:
    """The text the rules give a burst (a reply or a hand-off's), else the default reply, else None."""
    picked = pick_rule(config, messages)
    if picked is not None:
        rule, found = picked
        groups = rule["match"]["regex"].groups if "regex" in rule["match"] else 0
        text = rule["reply"] if "reply" in rule else rule["handoff"]
        return render(text, messages[-1], language=language, default=default, found=found, groups=groups)
    if "default_reply" in config:
        return render(config["default_reply"], messages[-1], language=language, default=default)
    return None


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


LANGUAGES = ROUTER_SCHEMA(
    {
        "rules": [
            {"match": {"keyword": ["hi", "привет", "olá"]}, "reply": {"en": "Hello!", "ru": "Здравствуйте!"}},
            {"match": {"keyword": ["human", "оператор"]}, "handoff": {"en": "Connecting you.", "pt-br": "Um momento."}},
            {"match": {"keyword": "menu"}, "reply": {"en": {"text": "Pick", "buttons": ["A"]}, "ru": "Выберите"}},
        ],
        "default_reply": {"en": "Sorry?", "ru": "Простите?", "pt": "Desculpe?"},
    }
)


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("hi", "ru", "Здравствуйте!"),
        ("hi", "ru-RU", "Здравствуйте!"),  # its base language
        ("hi", "pt", "Hello!"),  # no Portuguese: the default language
        ("hi", None, "Hello!"),
        ("human", "pt", "Connecting you."),  # pt-BR is not pt: the default follows
        ("human", "pt-BR", "Um momento."),
        ("human", "de", "Connecting you."),
        ("??", "pt-BR", "Desculpe?"),
        ("menu", "ru", "Выберите"),
    ],
)
def test_replies_follow_the_contacts_language(text: str, language: str | None, expected: str) -> None:
    reply = answer(LANGUAGES, message(text), language=language)
    assert reply is not None and reply.content["text"]["body"] == expected


def test_a_reply_with_buttons_per_language() -> None:
    reply = answer(LANGUAGES, message("menu"), language="en")
    assert reply == OutgoingMessage.reply_buttons("15551234567", "Pick", ["A"])


def test_a_default_language_without_a_text_falls_back_to_the_first_written() -> None:
    config = ROUTER_SCHEMA({"default_reply": {"ru": "Простите?", "pt": "Desculpe?"}})
    reply = answer(config, message("x"), language="de", default="en")
    assert reply is not None and reply.content["text"]["body"] == "Простите?"


def test_languages_of_the_configured_texts() -> None:
    assert languages(LANGUAGES) == {"en", "ru", "pt-BR", "pt"}


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"rules": [{"match": {"keyword": "a"}}]}, "either 'reply'"),
        ({"rules": [{"match": {"keyword": "a"}, "reply": "x", "handoff": "y"}]}, "either 'reply'"),
        ({"rules": [{"match": {"keyword": "a"}, "handoff": {"text": "t", "buttons": ["b"]}}]}, "cannot have buttons"),
        ({"rules": [{"match": {"keyword": "a"}, "reply": {"english": "x"}}]}, "is not a language code"),
        ({"rules": [{"match": {"keyword": "a"}, "reply": {"en": "{1}"}}]}, "placeholder {1}"),
        ({"greeting": {"en": "Hi {1}"}}, "placeholder {1}"),
        ({"default_reply": {}}, "at least one language"),
    ],
)
def test_bad_language_texts_are_refused(config: dict[str, object], error: str) -> None:
    with pytest.raises(vol.Invalid) as caught:
        ROUTER_SCHEMA(config)
    assert error in str(caught.value)


def test_in_a_burst_a_hand_off_wins_then_the_latest_message() -> None:
    assert answer(LANGUAGES, message("menu"), message("hi")) == OutgoingMessage.text("15551234567", "Hello!")
    handoff = answer(LANGUAGES, message("a human please"), message("hi"))
    assert handoff == OutgoingMessage.text("15551234567", "Connecting you.")
