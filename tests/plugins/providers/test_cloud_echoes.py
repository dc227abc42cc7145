"""Coexistence echoes (``smb_message_echoes``) parsed into ``EchoMessage``s and
screened for the inbox; the bodies are in tests/fixtures/cloud."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from wahub.core.inbound.intake import screen
from wahub.core.models import EchoMessage, Event, InboundMessage, UnsupportedEvent, event_from_json, event_to_json
from wahub.plugins.providers.cloud.webhook import parse_cloud_webhook

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cloud"
WABA = "102290129340398"
NUMBER_ID = "106540352242922"
USER, BSUID = "16505550142", "US.13491208655302741918"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def parse(body: dict[str, Any], numbers: dict[str, str] | None = None) -> list[Event]:
    raw = json.dumps(body).encode()
    return parse_cloud_webhook(raw, default="cloud", numbers=numbers or {NUMBER_ID: "main"}, accounts={WABA: ["main"]})


def echo_value(body: dict[str, Any]) -> dict[str, Any]:
    """The ``value`` of a fixture's first ``smb_message_echoes`` change (to edit in place)."""
    changes = body["entry"][0]["changes"]
    value: dict[str, Any] = next(c["value"] for c in changes if c["field"] == "smb_message_echoes")
    return value


def only_echo(body: dict[str, Any]) -> EchoMessage:
    (event,) = parse(body)
    assert isinstance(event, EchoMessage), event
    return event


def test_an_echo_is_keyed_and_ordered_as_the_users_own_messages() -> None:
    echo = only_echo(fixture("smb_message_echoes"))
    (message,) = parse(fixture("text"))
    assert isinstance(message, InboundMessage)
    assert (echo.provider, echo.recipient, echo.identities) == ("main", USER, {"wa_id": USER})
    assert echo.contact_key == message.contact_key == f"main:{USER}"
    assert echo.external_id == "wamid.HBgLMTY1MDU1NTAxNDIVAgARGBJFQ0hPMDAxQzNENEU1RjZBAA=="
    assert echo.content == {"text": {"body": "Sent from the Business app on my phone"}}
    assert echo.timestamp == 1751105000.0


def test_an_echo_to_a_user_with_a_bsuid_is_addressed_as_their_messages_are() -> None:
    echo = only_echo(fixture("smb_message_echoes_bsuid"))
    (message,) = parse(fixture("bsuid_with_phone"))
    assert isinstance(message, InboundMessage)
    assert echo.recipient == message.sender == BSUID
    assert echo.contact_key == message.contact_key == f"main:{USER}"
    assert echo.identities["parent_bsuid"] == "US.ENT.11815799212886844830"
    assert echo.identities["username"] == "marta.r"


def test_an_echo_to_a_user_who_hid_their_number_is_keyed_by_the_bsuid() -> None:
    body = fixture("smb_message_echoes_bsuid")
    value = echo_value(body)
    del value["message_echoes"][0]["to"], value["contacts"][0]["wa_id"]
    echo = only_echo(body)
    assert (echo.recipient, echo.contact_key) == (BSUID, f"main:{BSUID}")
    assert "wa_id" not in echo.identities


def test_the_contact_is_found_by_bsuid_then_wa_id_among_several() -> None:
    body = fixture("smb_message_echoes")
    value = echo_value(body)
    first = copy.deepcopy(value["message_echoes"][0])
    second = {**first, "id": "wamid.second", "to": "16505550177", "to_user_id": "US.99"}
    value["message_echoes"] = [first, second]
    value["contacts"] = [
        {"profile": {"name": "Dev Patel", "username": "dev.p"}, "wa_id": "16505550177", "user_id": "US.99"},
        {"profile": {"name": "Marta Ruiz"}, "wa_id": USER},
    ]
    to_marta, to_dev = parse(body)
    assert isinstance(to_marta, EchoMessage) and isinstance(to_dev, EchoMessage)
    assert to_marta.identities == {"wa_id": USER}
    assert to_marta.raw["contact"]["profile"]["name"] == "Marta Ruiz"
    assert (to_dev.recipient, to_dev.identities["username"]) == ("US.99", "dev.p")


def test_a_lone_contact_describes_a_lone_echo_that_names_only_its_bsuid() -> None:
    body = fixture("smb_message_echoes_bsuid")
    value = echo_value(body)
    echo_item = value["message_echoes"][0]
    del echo_item["to"], echo_item["to_user_id"], echo_item["to_parent_user_id"]
    echo = only_echo(body)
    assert echo.recipient == BSUID  # from the change's only contact
    assert echo.identities["wa_id"] == USER


def test_echoes_route_by_the_number_and_fall_back_to_the_receiving_provider() -> None:
    body = fixture("smb_message_echoes")
    (mine,) = parse(body, numbers={NUMBER_ID: "shop"})
    (unknown,) = parse(body, numbers={"999": "other"})
    assert (mine.provider, unknown.provider) == ("shop", "cloud")


def test_a_media_echo_keeps_the_cloud_shape_of_its_type() -> None:
    echo = only_echo(fixture("smb_message_echoes_image"))
    assert echo.type == "image"
    assert echo.content["image"]["id"] == "1342817765012944"
    assert echo.content["image"]["caption"] == "Your replacement lid, packed"


def test_a_removed_reaction_echo_reads_as_an_empty_emoji() -> None:
    body = fixture("smb_message_echoes")
    item = echo_value(body)["message_echoes"][0]
    del item["text"]
    item.update(type="reaction", reaction={"message_id": "wamid.theirs"})
    assert only_echo(body).content == {"reaction": {"message_id": "wamid.theirs", "emoji": ""}}


@pytest.mark.parametrize(
    "change",
    [
        {"id": None},
        {"type": ""},
        {"timestamp": "soon"},
        {"to": None},
        {"image": {"id": ["not", "text"]}, "type": "image"},
        {"image": {"caption": 12}, "type": "image"},
    ],
    ids=["no-id", "no-type", "bad-time", "nobody", "media-id-not-text", "caption-not-text"],
)
def test_an_echo_wahub_cannot_read_is_kept_unparsed_and_the_rest_still_counts(change: dict[str, Any]) -> None:
    body = fixture("smb_message_echoes")
    value = echo_value(body)
    good = value["message_echoes"][0]
    bad = {key: item for key, item in {**copy.deepcopy(good), **change}.items() if item is not None}
    value["message_echoes"] = [bad, good, "not an object"]
    unreadable, echo, not_object = parse(body)
    assert isinstance(unreadable, UnsupportedEvent) and isinstance(not_object, UnsupportedEvent)
    assert unreadable.external_id.startswith("unparsed:")
    assert unreadable.raw == {"field": "smb_message_echoes", "entry_id": WABA, "item": bad}
    assert isinstance(echo, EchoMessage) and echo.external_id == good["id"]
    # A redelivered body dedupes to the same ids.
    assert [e.external_id for e in parse(body)] == [unreadable.external_id, echo.external_id, not_object.external_id]


def test_an_echo_round_trips_through_the_inbox_row() -> None:
    echo = only_echo(fixture("smb_message_echoes_bsuid"))
    row, problem = screen(echo)
    assert problem is None and row is not None
    assert (row["kind"], row["contact_key"], row["external_id"]) == ("echo", f"main:{USER}", echo.external_id)
    stored = json.loads(json.dumps(row["payload"]))  # as the inbox's JSON column gives it back
    assert event_from_json(stored) == echo
    assert event_to_json(event_from_json(stored)) == row["payload"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"recipient": "1" * 300, "identities": {}}, "the recipient is longer than 251 characters"),
        ({"recipient": "US." + "1" * 200}, "recipient is longer than 128 characters"),
        ({"type": ["text"]}, "type is a list, not text"),
        ({"identities": {"wa_id": 16505550142}}, "a recipient identity is not text"),
        ({"identities": {"bsuid": "U" * 300}}, "a recipient identity is longer than"),
        ({"content": {"text": {"body": "nul \x00 inside"}}}, "content.text.body: text holding a NUL character"),
        ({"content": {"text": {"body": "\udc00"}}}, "content.text.body: text that is not valid Unicode"),
        ({"timestamp": float("inf")}, "the event time is not a finite number"),
    ],
    ids=["long-key", "long-recipient", "type-not-text", "id-not-text", "long-id", "nul", "surrogate", "inf"],
)
def test_an_echo_no_database_takes_is_refused_with_its_reason(change: dict[str, Any], reason: str) -> None:
    echo = dataclasses.replace(only_echo(fixture("smb_message_echoes")), **change)
    row, problem = screen(echo)
    assert row is None
    assert problem is not None and reason in problem
