"""Whom a Cloud API send addresses: the contact's phone number whenever wahub
knows one, its BSUID only for users without one, and what the API's answer
teaches about the contact's ids. Over real HTTP against the fake Graph API
(and 360dialog), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.providers.test_cloud_api import AUTH, BSUID, PLATFORMS, USER, Cloud, _cloud
from wahub.testing import wait_until
from wahub.testing.fake_graph import validate_message

ROUTER = {"router": {"default_reply": "Thanks {name}, we are on it."}}


@pytest.fixture(params=PLATFORMS)
async def cloud(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    """A daemon answering every message with the router's default reply."""
    async for running in _cloud(request.param, database_url, tmp_path, sections=ROUTER):
        yield running


async def _replies(cloud: Cloud, count: int) -> list[dict[str, Any]]:
    """The first ``count`` message bodies the fake API accepted."""

    async def arrived() -> list[dict[str, Any]] | None:
        return cloud.server.messages[:count] if len(cloud.server.messages) >= count else None

    found: list[dict[str, Any]] = await wait_until(arrived, within=15)
    return found


async def _username_only_user_writes(cloud: Cloud, text: str) -> None:
    """A message from a user with a username and a BSUID but no phone number."""
    contact = {"profile": {"name": "Ana", "username": "ana_x"}, "user_id": BSUID}
    message = {
        "from_user_id": BSUID,
        "id": f"wamid.in.{time.monotonic_ns()}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    assert await cloud.server.deliver({"contacts": [contact], "messages": [message]}) == 200


async def _last_reply_row(cloud: Cloud, *statuses: str) -> dict[str, Any]:
    """The newest outgoing message to the BSUID user, once in one of ``statuses``."""

    async def reached() -> dict[str, Any] | None:
        rows = [
            row for row in await cloud.daemon.hub.storage.messages.history("main", BSUID) if row["direction"] == "out"
        ]
        return rows[-1] if rows and rows[-1]["status"] in statuses else None

    found: dict[str, Any] = await wait_until(reached, within=15)
    return found


async def test_a_reply_goes_to_the_phone_the_webhook_gave_and_fits_metas_unamended_schema(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "where is my order?"}}, user_id=BSUID)

    [reply] = await _replies(cloud, 1)
    assert reply["to"] == USER and "recipient" not in reply
    assert reply["text"] == {"body": "Thanks Ana, we are on it."}
    assert validate_message(reply, amended=False) == []
    # The contact is still the BSUID's: the reply is in its history, delivered.
    row = await _last_reply_row(cloud, "delivered")
    assert row["address"] == BSUID


async def test_a_username_only_user_is_answered_through_recipient(cloud: Cloud) -> None:
    await _username_only_user_writes(cloud, "hello")

    [reply] = await _replies(cloud, 1)
    assert reply["recipient"] == BSUID and "to" not in reply
    assert validate_message(reply, amended=False) == []
    await _last_reply_row(cloud, "delivered")


async def test_a_bsuid_refused_with_131062_fails_with_its_reason_when_no_phone_is_known(cloud: Cloud) -> None:
    cloud.server.accepts_bsuids = False
    await _username_only_user_writes(cloud, "hello")

    failed = await _last_reply_row(cloud, "failed")
    assert failed["error_code"] == "131062"
    assert "business-scoped user id; use the phone number" in failed["error_reason"]
    assert "no phone number is known for this user" in failed["error_reason"]
    assert cloud.server.messages == []

    # Once a message brings the user's number, replies go to it.
    await cloud.inbound({"type": "text", "text": {"body": "my number"}}, user_id=BSUID)
    [reply] = await _replies(cloud, 1)
    assert reply["to"] == USER
    await _last_reply_row(cloud, "delivered")


async def test_an_api_send_keeps_its_bsuid_and_goes_again_by_phone_on_131062(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hi"}}, user_id=BSUID)
    await _replies(cloud, 1)  # the router's reply, by phone

    # What the caller wrote is what goes out...
    sent = await cloud.send({"to": BSUID, "type": "text", "text": {"body": "Your parcel left"}})
    await cloud.status_becomes(sent["id"], "delivered")
    assert cloud.server.messages[-1]["recipient"] == BSUID and "to" not in cloud.server.messages[-1]

    # ...unless WhatsApp refuses the BSUID for it (131062): then once more, to the phone number.
    cloud.server.accepts_bsuids = False
    again = await cloud.send({"to": BSUID, "type": "text", "text": {"body": "Your parcel arrived"}})
    delivered = await cloud.status_becomes(again["id"], "delivered")
    # The message stays the contact's, marked as sent to the address as written.
    assert delivered["message"]["to"] == BSUID and delivered["message"]["keep_address"] is True
    tries = [r.json for r in cloud.server.requests if r.method == "POST" and r.path.endswith("/messages")][-2:]
    assert [("recipient" in body, body.get("to")) for body in tries] == [(True, None), (False, USER)]
    assert cloud.server.messages[-1]["text"] == {"body": "Your parcel arrived"}


async def test_the_wa_id_a_send_answers_is_kept_as_an_id_of_the_contact(cloud: Cloud) -> None:
    written, canonical = "5215512345678", "525512345678"  # Mexico's numbers lost their 1 after 52
    cloud.server.wa_ids[written] = canonical
    await cloud.inbound({"type": "text", "text": {"body": "hola"}}, user_id=BSUID, wa_id=written)
    [reply] = await _replies(cloud, 1)
    assert reply["to"] == written

    contacts = cloud.daemon.hub.storage.contacts

    async def learnt() -> bool:
        return ("wa_id", canonical) in await contacts.identities("main", BSUID)

    await wait_until(learnt)
    # The contact is found by WhatsApp's form of its number now...
    url = f"{cloud.daemon.url}/api/v1/contacts/main/{canonical}"
    async with cloud.http.patch(url, json={"timezone": "America/Mexico_City"}, headers=AUTH) as response:
        assert response.status == 200
    context = await cloud.daemon.hub.storage.policy.contact("main", BSUID)
    assert context.timezone == "America/Mexico_City"
    # ...and the next reply goes to it.
    await cloud.inbound({"type": "text", "text": {"body": "gracias"}}, user_id=BSUID, wa_id=written)
    replies = await _replies(cloud, 2)
    assert replies[1]["to"] == canonical
