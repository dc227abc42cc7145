"""The hubspot crm: backend: a daemon on a real database speaking HTTP to the
fake HubSpot (``wahub.testing.fake_hubspot``), whose search lags as
HubSpot's does, and which refuses, rate-limits or goes down when told."""

from __future__ import annotations

import json
import logging
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wahub.core.config.schema import ConfigError, load_config
from wahub.core.conversations.ownership import change_owner
from wahub.core.crm import TranscriptLine
from wahub.core.models import IntegrationEvent
from wahub.core.plugins import (
    registered_ai_backends,
    registered_crm_backends,
    registered_providers,
    registered_sections,
)
from wahub.plugins.crm.hubspot import MAX_BODY, note_bodies
from wahub.testing import (
    ManualClock,
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    wait_until,
)
from wahub.testing.fake_hubspot import FakeHubSpot, HubSpotRecord

TOKEN = "pat-na1-test-token"
PHONE = "+15551234567"
ROUTER = {"rules": [{"match": {"keyword": "human"}, "handoff": "A person will answer."}], "default_reply": "Hello!"}
#: Seconds of search lag that outlast any test: a contact created is never found by search.
NEVER = 3600.0


@pytest.fixture
async def hubspot() -> AsyncIterator[FakeHubSpot]:
    fake = await FakeHubSpot(token=TOKEN).start()
    yield fake
    await fake.close()
    assert fake.faults == []


def config(database_url: str, hubspot: FakeHubSpot, **entry: Any) -> dict[str, Any]:
    crm = {"platform": "hubspot", "name": "hubspot", "token": TOKEN, "api_base": hubspot.url, **entry}
    return build_config({"router": ROUTER, "crm": [crm]}, database=database_url)


async def deliveries(daemon: RunningDaemon, state: str, event_type: str | None = None) -> list[dict[str, Any]]:
    rows, _ = await daemon.hub.storage.deliveries.listing(endpoint="hubspot", state=state, limit=500)
    return [row for row in rows if event_type is None or row["type"] == event_type]


async def delivered(daemon: RunningDaemon, count: int, event_type: str | None = None) -> bool:
    return len(await deliveries(daemon, "delivered", event_type)) >= count


async def the_contact(hubspot: FakeHubSpot) -> HubSpotRecord:
    async def found() -> list[HubSpotRecord]:
        return hubspot.contacts_with("phone", PHONE)

    [contact] = await wait_until(found)
    return contact


async def conversation_id(daemon: RunningDaemon, owner: str) -> int:
    async def owned() -> list[dict[str, Any]]:
        return (await daemon.hub.storage.conversations.list(owners=[owner])).items

    return int((await wait_until(owned))[0]["id"])


def searches(hubspot: FakeHubSpot) -> int:
    return len([r for r in hubspot.requests if r.path.endswith("/contacts/search")])


# -- contacts ------------------------------------------------------------------------------


async def test_a_new_contact_is_created_once_though_search_never_finds_it(
    database_url: str, hubspot: FakeHubSpot
) -> None:
    hubspot.index_delay = NEVER
    entry = config(database_url, hubspot)
    async with running_daemon(entry) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Ana Maria Silva")])
        contact = await the_contact(hubspot)
        await daemon.post_sandbox([sandbox_message("are you there?", name="Ana Maria Silva")])
        await wait_until(lambda: delivered(daemon, 2, "message.received"))
        identities = await daemon.hub.storage.contacts.identities("sandbox", "15551234567")
    async with running_daemon(entry) as daemon:  # the same database: the link outlives the process
        await daemon.post_sandbox([sandbox_message("hello again", name="Ana Maria Silva")])
        await wait_until(lambda: delivered(daemon, 3, "message.received"))

    assert hubspot.contacts_with("phone", PHONE) == [contact]
    assert (contact.properties["firstname"], contact.properties["lastname"]) == ("Ana", "Maria Silva")
    assert ("crm:hubspot", contact.id) in identities
    assert searches(hubspot) == 1  # the first message only: then the link is used
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in hubspot.requests)


UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"


@pytest.mark.parametrize("loss", ["answered 500", "no answer in time"])
async def test_with_an_id_property_a_create_whose_answer_was_lost_makes_one_contact(
    database_url: str, hubspot: FakeHubSpot, loss: str
) -> None:
    hubspot.index_delay = NEVER  # the retry's search does not see what the lost call made
    hubspot.register_property("contacts", "wahub_contact_id", unique=True)
    if loss == "answered 500":
        hubspot.fail_next(500, applied=True, match=UPSERT)
    else:
        hubspot.hang_next(match=UPSERT)
    clock = ManualClock(time.time())
    entry = config(database_url, hubspot, id_property="wahub_contact_id", timeout=1)
    async with running_daemon(entry, clock=clock) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Ana Silva")])
        contact = await the_contact(hubspot)  # made by the call whose answer is lost
        await wait_until(lambda: _tried(daemon))
        clock.advance(10)  # past the first retry
        await wait_until(lambda: delivered(daemon, 1, "message.received"))
        identities = await daemon.hub.storage.contacts.identities("sandbox", "15551234567")
        upserts = [r for r in hubspot.requests if f"{r.method} {r.path}" == UPSERT]

    assert hubspot.contacts_with("phone", PHONE) == [contact] and len(hubspot.contacts) == 1
    assert ("crm:hubspot", contact.id) in identities
    wahub_id = contact.properties["wahub_contact_id"]
    assert wahub_id.isdigit() and contact.properties["firstname"] == "Ana"
    assert upserts[-1].status == 200 and upserts[-1].json["inputs"][0]["idProperty"] == "wahub_contact_id"
    assert all(r.json["inputs"][0]["id"] == wahub_id for r in upserts)


async def test_with_an_id_property_a_contact_found_by_phone_gets_it(database_url: str, hubspot: FakeHubSpot) -> None:
    hubspot.register_property("contacts", "wahub_contact_id", unique=True)
    known = hubspot.add_contact(phone=PHONE, firstname="Ana", lastname="Costa")
    async with running_daemon(config(database_url, hubspot, id_property="wahub_contact_id")) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        await wait_until(lambda: delivered(daemon, 1, "message.received"))

    assert list(hubspot.contacts) == [known.id]
    assert known.properties["wahub_contact_id"].isdigit() and known.properties["firstname"] == "Ana"
    assert not [r for r in hubspot.requests if f"{r.method} {r.path}" == UPSERT]


async def test_a_contact_hubspot_has_is_found_by_its_digits_and_keeps_its_name(
    database_url: str, hubspot: FakeHubSpot
) -> None:
    known = hubspot.add_contact(mobilephone="15551234567", firstname="Ana", lastname="Costa")
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Annie")])
        await wait_until(lambda: delivered(daemon, 1, "message.received"))
        identities = await daemon.hub.storage.contacts.identities("sandbox", "15551234567")

    assert list(hubspot.contacts) == [known.id]
    assert ("crm:hubspot", known.id) in identities
    # Its blanks are filled in (the phone), what someone entered is kept.
    assert (known.properties["firstname"], known.properties["lastname"]) == ("Ana", "Costa")
    assert known.properties["phone"] == PHONE


async def test_a_contact_created_before_a_lost_link_is_linked_from_hubspots_409(
    database_url: str, hubspot: FakeHubSpot
) -> None:
    hubspot.unique.add("phone")
    earlier = hubspot.add_contact(phone=PHONE)
    earlier.index = [(time.time() + NEVER, dict(earlier.properties))]  # created a moment ago: not searchable yet
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        await wait_until(lambda: delivered(daemon, 1, "message.received"))
        identities = await daemon.hub.storage.contacts.identities("sandbox", "15551234567")

    assert list(hubspot.contacts) == [earlier.id]
    assert [r.path for r in hubspot.answered(409)] == ["/crm/v3/objects/contacts"]
    assert ("crm:hubspot", earlier.id) in identities
    assert earlier.properties["firstname"] == "Test"  # the blanks filled in from WhatsApp


async def test_a_new_name_and_a_language_reach_the_linked_contact(database_url: str, hubspot: FakeHubSpot) -> None:
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Ana")])
        contact = await the_contact(hubspot)
        await daemon.post_sandbox([sandbox_message("me again", name="Ana Lima")])
        await wait_until(lambda: delivered(daemon, 1, "contact.updated"))
        assert (contact.properties["firstname"], contact.properties["lastname"]) == ("Ana", "Lima")
        # HubSpot offers pt but not pt-pt: the primary language is written instead.
        local_id = (await deliveries(daemon, "delivered"))[0]["contact_id"]
        await daemon.hub.storage.contacts.update(local_id, {"language": "pt-PT"})
        await wait_until(lambda: delivered(daemon, 2, "contact.updated"))

    assert contact.properties["hs_language"] == "pt"
    assert len(hubspot.contacts) == 1


async def test_opting_out_and_in_sets_the_configured_property(database_url: str, hubspot: FakeHubSpot) -> None:
    hubspot.register_property("contacts", "whatsapp_opted_out")
    async with running_daemon(config(database_url, hubspot, opt_out_property="whatsapp_opted_out")) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        contact = await the_contact(hubspot)
        await daemon.post_sandbox([sandbox_message("STOP")])
        await wait_until(lambda: delivered(daemon, 1, "contact.opted_out"))
        assert contact.properties["whatsapp_opted_out"] == "true"
        await daemon.post_sandbox([sandbox_message("START")])
        await wait_until(lambda: delivered(daemon, 1, "contact.opted_in"))

    assert contact.properties["whatsapp_opted_out"] == "false"


async def test_a_contact_without_a_phone_number_is_skipped_and_said_why(
    database_url: str, hubspot: FakeHubSpot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahub.plugins.crm.hubspot")
    contact = {"id": 7, "provider": "sandbox", "address": "US.13491208655302741918", "phone": None, "name": "Bo"}
    message = {"id": 1, "direction": "in", "type": "text", "text": "hi", "origin": None, "created_at": "2026-12-01"}
    event = IntegrationEvent(
        "evt_1", "message.received", "2026-12-01T09:30:00.000Z", {"message": message, "contact": contact}, 7, 0
    )
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.hub.crm["hubspot"].deliver(event)  # it does not fail: nothing to retry

    assert hubspot.requests == []
    assert "contact 7 is not synced: it is known only by its WhatsApp user id" in caplog.text


# -- notes and tickets ----------------------------------------------------------------------


async def test_a_resolved_conversation_is_a_note_on_the_contact_once(database_url: str, hubspot: FakeHubSpot) -> None:
    hubspot.index_delay = NEVER
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Ana Silva")])
        await daemon.post_sandbox([sandbox_message("human", name="Ana Silva")])
        conversation = await conversation_id(daemon, "queued")
        await change_owner(daemon.hub, conversation, "resolved", actor="operator:ana", reason="answered")
        contact = await the_contact(hubspot)
        [note] = await wait_until(lambda: _listed(hubspot.notes_of(contact.id)))
        [resolved] = await wait_until(lambda: deliveries(daemon, "delivered", "conversation.resolved"))
        await daemon.hub.storage.deliveries.replay(ids=[resolved["id"]], now=daemon.hub.clock.time())
        await wait_until(lambda: delivered(daemon, 1, "conversation.resolved"))

    body = note.properties["hs_note_body"]
    assert "resolved by operator:ana" in body
    for said in ("Ana Silva: hi", "Bot: Hello!", "Ana Silva: human", "Bot: A person will answer."):
        assert said in body, body
    assert body.index("Ana Silva: hi") < body.index("Bot: Hello!") < body.index("Ana Silva: human")
    assert note.associations == [("contacts", contact.id, 202)]
    assert note.properties["hs_timestamp"].isdigit()
    assert len(hubspot.notes) == 1  # the replay found the note it had made
    assert len(hubspot.contacts) == 1


async def test_a_handoff_opens_a_ticket_and_a_note_once(database_url: str, hubspot: FakeHubSpot) -> None:
    entry = config(database_url, hubspot, ticket_on_handoff=True, note_on_handoff=True, note_on_resolve=False)
    async with running_daemon(entry) as daemon:
        await daemon.post_sandbox([sandbox_message("hi", name="Ana Silva")])
        await daemon.post_sandbox([sandbox_message("human", name="Ana Silva")])
        contact = await the_contact(hubspot)
        [ticket] = await wait_until(lambda: _listed(hubspot.tickets_of(contact.id)))
        [queued] = await wait_until(lambda: deliveries(daemon, "delivered", "conversation.queued"))
        await daemon.hub.storage.deliveries.replay(ids=[queued["id"]], now=daemon.hub.clock.time())
        await wait_until(lambda: delivered(daemon, 1, "conversation.queued"))
        conversation = await conversation_id(daemon, "queued")
        await change_owner(daemon.hub, conversation, "resolved", actor="operator:ana", reason="answered")
        await wait_until(lambda: delivered(daemon, 1, "conversation.resolved"))

    assert ticket.properties["subject"] == "WhatsApp conversation with Ana Silva"
    assert (ticket.properties["hs_pipeline"], ticket.properties["hs_pipeline_stage"]) == ("0", "1")
    assert "Ana Silva: hi" in ticket.properties["content"] and "Ana Silva: human" in ticket.properties["content"]
    assert ticket.associations == [("contacts", contact.id, 16)]
    [note] = hubspot.notes_of(contact.id)  # the hand-off's; none on resolve (note_on_resolve: false)
    assert "a person was asked for" in note.properties["hs_note_body"]
    assert len(hubspot.tickets) == 1


async def test_a_note_for_a_contact_deleted_in_hubspot_goes_to_it_found_again(
    database_url: str, hubspot: FakeHubSpot
) -> None:
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("human")])
        gone = await the_contact(hubspot)
        hubspot.archive_contact(gone.id)
        await change_owner(daemon.hub, await conversation_id(daemon, "queued"), "resolved", actor="api", reason="done")
        contact = await the_contact(hubspot)
        [note] = await wait_until(lambda: _listed(hubspot.notes_of(contact.id)))

    assert contact.id != gone.id
    assert "Test User: human" in note.properties["hs_note_body"]


def test_a_long_transcript_is_split_into_notes_within_hubspots_limit() -> None:
    lines = [TranscriptLine(1764581400.0 + n, "contact", f"{n:04d} " + "x" * 4000) for n in range(40)]

    bodies = note_bodies("WhatsApp conversation resolved by api", lines, contact_name="Ana")

    assert len(bodies) == 3
    assert all(len(body) <= MAX_BODY for body in bodies)
    assert all(f"(part {n} of 3)" in body for n, body in enumerate(bodies, 1))
    assert [line.text[:4] for line in lines] == [f"{n:04d}" for n in range(40)]
    joined = "".join(bodies)
    assert all(f"Ana: {n:04d} " in joined for n in range(40))


# -- failures -------------------------------------------------------------------------------


async def test_a_rate_limit_waits_for_retry_after(database_url: str, hubspot: FakeHubSpot) -> None:
    clock = ManualClock(time.time())
    hubspot.fail_next(429, retry_after=120)
    async with running_daemon(config(database_url, hubspot), clock=clock) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        clock.set(time.time() + 1)  # the event, stored at the real time, falls due
        await wait_until(lambda: _listed(hubspot.answered(429)))
        [waiting] = await wait_until(lambda: _tried(daemon))
        failed_at = clock.time()
        assert waiting["next_attempt_at"] >= failed_at + 119
        assert waiting["last_status"] == 429 and "RATE_LIMIT" in waiting["last_error"]
        clock.advance(60)
        [still] = await deliveries(daemon, "pending", "message.received")
        assert (still["attempts"], still["next_attempt_at"]) == (1, waiting["next_attempt_at"])
        assert still["next_attempt_at"] > clock.time()
        clock.advance(61)
        await the_contact(hubspot)

    assert hubspot.answered(429)[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_hubspot_down_delays_nothing_on_whatsapp(database_url: str, hubspot: FakeHubSpot) -> None:
    hubspot.down = True
    async with running_daemon(config(database_url, hubspot)) as daemon, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{daemon.url}/sandbox/ws?user=15551234567&name=Ana") as chat:
            assert (await chat.receive_json())["type"] == "history"
            await daemon.post_sandbox([sandbox_message("hi", name="Ana")])
            reply = await _next_message(chat)
        [waiting] = await wait_until(lambda: _tried(daemon))

    assert (reply["direction"], reply["text"]) == ("out", "Hello!")
    assert waiting["state"] == "pending" and waiting["last_status"] == 503
    assert hubspot.contacts == {}


async def test_a_refused_token_is_retried_and_named(
    database_url: str, hubspot: FakeHubSpot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahub.plugins.crm.hubspot")
    hubspot.token = "pat-na1-another-token"
    async with running_daemon(config(database_url, hubspot)) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        [waiting] = await wait_until(lambda: _tried(daemon))

    assert waiting["state"] == "pending" and waiting["last_status"] == 401
    assert (
        "INVALID_AUTHENTICATION" in waiting["last_error"] and "`token` of crm entry 'hubspot'" in waiting["last_error"]
    )
    assert "HubSpot refused the token" in caplog.text
    assert TOKEN not in caplog.text


async def test_a_property_hubspot_does_not_have_is_given_up_with_its_message(
    database_url: str, hubspot: FakeHubSpot
) -> None:
    async with running_daemon(config(database_url, hubspot, properties={"whatsapp_source": "bot"})) as daemon:
        await daemon.post_sandbox([sandbox_message("hi")])
        [failed] = await wait_until(lambda: deliveries(daemon, "failed"))

    assert failed["last_status"] == 400
    assert "VALIDATION_ERROR: Property values were not valid" in failed["last_error"]
    assert 'Property \\"whatsapp_source\\" does not exist' in failed["last_error"]
    assert hubspot.contacts == {}


# -- the fake -------------------------------------------------------------------------------


async def test_the_fake_refuses_what_hubspot_refuses(hubspot: FakeHubSpot) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    note = {"hs_timestamp": "2026-12-01T09:30:00.000Z", "hs_note_body": "hi"}
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: Any, headers: dict[str, str] = auth) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{hubspot.url}/crm/v3/objects/{path}", json=body, headers=headers) as answer:
                return answer.status, await answer.json()

        def to(contact_id: str, type_id: int) -> list[dict[str, Any]]:
            types = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]
            return [{"to": {"id": contact_id}, "types": types}]

        status, created = await post("contacts", {"properties": {"phone": PHONE}})
        refused = [
            await post("contacts", {"properties": {"phone": PHONE}}, headers={}),
            await post("contacts", {"properties": {"favourite_colour": "red"}}),
            await post("contacts", {"properties": {"hs_object_id": "1"}}),
            await post("notes", {"properties": {"hs_note_body": "hi"}, "associations": to(created["id"], 202)}),
            await post("notes", {"properties": {**note, "hs_note_body": "x" * 65537}}),
            await post("notes", {"properties": note, "associations": to(created["id"], 16)}),
            await post("notes", {"properties": note, "associations": to("999", 202)}),
            await post("tickets", {"properties": {"subject": "s", "hs_pipeline": "0", "hs_pipeline_stage": "9"}}),
        ]

    assert status == 201 and created["properties"]["phone"] == PHONE
    assert [answer[0] for answer in refused] == [401, 400, 400, 400, 400, 400, 400, 400]
    assert refused[0][1]["category"] == "INVALID_AUTHENTICATION"
    assert all(body["category"] == "VALIDATION_ERROR" for _, body in refused[1:])
    said = [body["message"] for _, body in refused[1:]]
    expected = ["PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE", "REQUIRED", "INVALID_STRING"]
    expected += ["association type HUBSPOT_DEFINED/16", "associations are invalid", "INVALID_OPTION"]
    assert all(error in message for error, message in zip(expected, said, strict=True)), said
    assert hubspot.notes == {} and hubspot.tickets == {}


async def test_the_fakes_search_lags_and_its_limits_answer_429(hubspot: FakeHubSpot) -> None:
    clock = ManualClock(1764581400.0)
    hubspot.clock, hubspot.index_delay = clock.time, 5.0
    hubspot.unique.add("phone")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    by_phone = {"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "EQ", "value": PHONE}]}]}
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: Any) -> tuple[int, dict[str, Any], Any]:
            async with http.post(f"{hubspot.url}/crm/v3/objects/{path}", json=body, headers=auth) as answer:
                return answer.status, await answer.json(), answer.headers

        created = (await post("contacts", {"properties": {"phone": PHONE}}))[1]
        at_once = (await post("contacts/search", by_phone))[1]
        again = await post("contacts", {"properties": {"phone": PHONE}})
        clock.advance(5)
        later = (await post("contacts/search", by_phone))[1]
        hubspot.fail_next(429, retry_after=10)
        limited = await post("contacts/search", by_phone)

    assert at_once == {"total": 0, "results": []}
    assert (again[0], again[1]["message"]) == (409, f"Contact already exists. Existing ID: {created['id']}")
    assert [result["id"] for result in later["results"]] == [created["id"]]
    assert (limited[0], limited[1]["errorType"], limited[2]["Retry-After"]) == (429, "RATE_LIMIT", "10")
    assert limited[2]["X-HubSpot-RateLimit-Remaining"] == "0" and "X-HubSpot-RateLimit-Max" in limited[2]


async def test_the_fakes_upsert_is_by_a_unique_property_only(hubspot: FakeHubSpot) -> None:
    hubspot.register_property("contacts", "wahub_contact_id", unique=True)
    hubspot.register_property("contacts", "favourite_colour")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{hubspot.url}/crm/v3/objects/contacts/batch/upsert"

    def upsert(id_property: str, key: str, **properties: str) -> dict[str, Any]:
        return {"inputs": [{"idProperty": id_property, "id": key, "properties": properties}]}

    async with aiohttp.ClientSession() as http:

        async def post(body: Any) -> tuple[int, dict[str, Any]]:
            async with http.post(url, json=body, headers=auth) as answer:
                return answer.status, await answer.json()

        first = await post(upsert("wahub_contact_id", "7", phone=PHONE))
        again = await post(upsert("wahub_contact_id", "7", firstname="Ana"))
        other = await post(upsert("wahub_contact_id", "8", phone="+15557654321"))
        not_unique = await post(upsert("favourite_colour", "red", phone="+15550000000"))

    assert first[0] == 200 and first[1]["status"] == "COMPLETE" and first[1]["results"][0]["new"] is True
    assert again[0] == 200 and again[1]["results"][0]["new"] is False
    assert again[1]["results"][0]["id"] == first[1]["results"][0]["id"] != other[1]["results"][0]["id"]
    [contact] = hubspot.contacts_with("wahub_contact_id", "7")
    assert (contact.properties["phone"], contact.properties["firstname"]) == (PHONE, "Ana")
    assert not_unique[0] == 400 and "not a unique identifier property" in not_unique[1]["message"]
    assert len(hubspot.contacts) == 2


# -- configuration --------------------------------------------------------------------------


def test_config_problems_name_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """
            crm:
              - platform: hubspot
                name: hubspot
                api_base: api.hubapi.com
                opt_out_property: WhatsApp opt-out
            """
        )
    )
    pm = plugin_manager()
    with pytest.raises(ConfigError) as caught:
        load_config(
            path,
            sections=registered_sections(pm),
            platforms=registered_providers(pm),
            ai_platforms=registered_ai_backends(pm),
            crm_platforms=registered_crm_backends(pm),
        )

    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:3: crm[0]: required key 'token' is missing",
        f"{path}:5: crm[0].api_base: expected HubSpot's API address, such as https://api.hubapi.com, "
        "not 'api.hubapi.com'",
        f"{path}:6: crm[0].opt_out_property: expected a property's internal name (lowercase letters, digits "
        "and _), not 'WhatsApp opt-out'",
    ]


def test_the_defaults_of_an_entry(sqlite_url: str) -> None:
    crm = [{"platform": "hubspot", "name": "hubspot", "token": TOKEN}]
    [entry] = build_config({"crm": crm}, database=sqlite_url)["crm"]

    assert (entry["note_on_resolve"], entry["note_on_handoff"], entry["ticket_on_handoff"]) == (True, False, False)
    assert (entry["ticket_pipeline"], entry["ticket_stage"], entry["properties"]) == ("0", "1", {})
    assert entry["api_base"] == "https://api.hubapi.com" and "opt_out_property" not in entry
    assert "id_property" not in entry


# -- helpers --------------------------------------------------------------------------------


async def _listed(items: list[Any]) -> list[Any]:
    return items


async def _tried(daemon: RunningDaemon) -> list[dict[str, Any]]:
    """The first message's delivery once it failed at least once."""
    return [row for row in await deliveries(daemon, "pending", "message.received") if row["attempts"] >= 1]


async def _next_message(chat: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        frame = json.loads((await chat.receive(timeout=10)).data)
        if frame["type"] == "message" and frame["message"]["direction"] == "out":
            return dict(frame["message"])
