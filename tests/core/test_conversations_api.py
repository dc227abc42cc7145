"""The REST API's conversations over real HTTP, on SQLite and PostgreSQL:
conversations start as users start them (a message through the sandbox's
signed webhook), then are listed, read, handed off, resolved and assigned."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.core.api_client import ANA, BRUNO, CARLA, DAY, Api, running_api
from tests.helpers import AUTH
from wahub.testing import sandbox_status, wait_until


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with running_api(database_url) as running:
        yield running


async def test_conversations_are_listed_with_their_contact_owner_and_window(api: Api) -> None:
    written = time.time()
    await api.write("hello", sender=ANA, name="Ana", at=written)
    listed = await api.ok("GET", "/api/v1/conversations")
    assert listed["next"] is None
    [item] = listed["conversations"]
    assert item["contact"]["address"] == ANA and item["contact"]["name"] == "Ana"
    assert item["contact"]["language"] is None
    assert (item["provider"], item["owner"], item["assignee"]) == ("sandbox", "bot", None)
    assert item["last_inbound_at"] == pytest.approx(written)
    assert item["window_open_until"] == pytest.approx(written + DAY)
    assert item["window_open"] is True
    assert isinstance(item["updated_at"], float) and isinstance(item["owner_changed_at"], float)


async def test_conversations_are_paged_and_filtered_by_owner_contact_and_update(api: Api) -> None:
    ana = await api.write("hello", sender=ANA, name="Ana")
    bruno = await api.write("hello", sender=BRUNO, name="Bruno")
    carla = await api.write("hello", sender=CARLA, name="Carla")

    first = await api.ok("GET", "/api/v1/conversations", limit=2)
    assert [c["id"] for c in first["conversations"]] == [ana["id"], bruno["id"]]
    rest = await api.ok("GET", "/api/v1/conversations", limit=2, after=first["next"])
    assert ([c["id"] for c in rest["conversations"]], rest["next"]) == ([carla["id"]], None)

    await api.ok("POST", f"/api/v1/conversations/{bruno['id']}/handoff", {"reason": "asked for a person"})
    queued = await api.ok("GET", "/api/v1/conversations", owner="queued,assigned")
    assert [c["id"] for c in queued["conversations"]] == [bruno["id"]]
    bots = await api.ok("GET", "/api/v1/conversations", owner="bot")
    assert [c["id"] for c in bots["conversations"]] == [ana["id"], carla["id"]]
    by_contact = await api.ok("GET", "/api/v1/conversations", contact_id=carla["contact"]["id"])
    assert [c["id"] for c in by_contact["conversations"]] == [carla["id"]]

    # Bruno's hand-off is the latest update: since then, only his shows, in either way of writing the time.
    since = (await api.ok("GET", f"/api/v1/conversations/{bruno['id']}"))["updated_at"]
    iso = _iso_at_or_before(since)
    for written in (repr(since), iso, iso.replace("+00:00", "Z")):
        recent = await api.ok("GET", "/api/v1/conversations", updated_since=written)
        assert [c["id"] for c in recent["conversations"]] == [bruno["id"]], written
    everything = await api.ok("GET", "/api/v1/conversations", updated_since="1970-01-01")
    assert len(everything["conversations"]) == 3


def _iso_at_or_before(at: float) -> str:
    """``at`` in ISO 8601, cut to whole microseconds, so never later than ``at``."""
    numerator, denominator = at.as_integer_ratio()
    micros = numerator * 1_000_000 // denominator
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)).isoformat()


async def _sent_replies(api: Api, conversation_id: int, count: int) -> list[dict[str, Any]]:
    """The conversation's first ``count`` replies, newest first, once the provider took them."""

    async def sent() -> list[dict[str, Any]] | None:
        found = await api.ok("GET", f"/api/v1/conversations/{conversation_id}")
        out = [m for m in found["messages"] if m["direction"] == "out" and m["status"] != "queued"]
        return out if len(out) == count else None

    replies: list[dict[str, Any]] = await wait_until(sent)
    return replies


async def test_a_conversation_shows_every_message_with_its_ticks_newest_first(api: Api) -> None:
    conversation = await api.write("hi", sender=ANA)
    [first] = await _sent_replies(api, conversation["id"], 1)
    assert (first["status"], first["origin"], first["to"]) == ("sent", "reply", ANA)
    assert first["message"]["text"] == {"body": "Hello!"}
    await api.webhook([sandbox_status(first["provider_message_id"], "delivered", recipient=ANA)])
    await api.webhook([sandbox_status(first["provider_message_id"], "read", recipient=ANA)])
    await api.write("hi again", sender=ANA)
    second, _ = await _sent_replies(api, conversation["id"], 2)
    await api.webhook([sandbox_status(second["provider_message_id"], "failed", recipient=ANA, error_code=131047)])

    found = await api.ok("GET", f"/api/v1/conversations/{conversation['id']}")
    assert [(m["direction"], m["id"]) for m in found["messages"][:3:2]] == [("out", second["id"]), ("out", first["id"])]
    failed, inbound, read = found["messages"][0], found["messages"][3], found["messages"][2]
    assert (inbound["direction"], inbound["from"], inbound["type"]) == ("in", ANA, "text")
    assert (inbound["status"], inbound["statuses"], inbound["error"]) == ("received", [], None)
    assert inbound["message"]["text"] == {"body": "hi"}
    assert read["status"] == "read"
    # Sandbox sends bring no "sent" status: the one "delivered" implies is shown, marked.
    assert [(tick["status"], tick["implied"]) for tick in read["statuses"]] == [
        ("sent", True),
        ("delivered", False),
        ("read", False),
    ]
    assert all(isinstance(tick["timestamp"], float) for tick in read["statuses"])
    assert (failed["status"], failed["error"]["code"]) == ("failed", "131047")
    assert [(tick["status"], tick["error_code"]) for tick in failed["statuses"]] == [("failed", "131047")]
    assert found["events"] == [] and found["next"] is None

    path = f"/api/v1/conversations/{conversation['id']}"
    newest = await api.ok("GET", path, limit=3)
    assert [m["id"] for m in newest["messages"]] == [m["id"] for m in found["messages"][:3]]
    older = await api.ok("GET", path, limit=3, before=newest["next"])
    assert ([m["id"] for m in older["messages"]], older["next"]) == ([inbound["id"]], None)


async def test_a_refused_reply_shows_with_its_reason(api: Api) -> None:
    # A message that took two days to arrive: the service window closed before its reply.
    written = time.time() - 2 * DAY
    conversation = await api.write("hi", sender=BRUNO, at=written)
    assert conversation["window_open"] is False
    assert conversation["window_open_until"] == pytest.approx(written + DAY)

    async def refused() -> dict[str, Any] | None:
        found = await api.ok("GET", f"/api/v1/conversations/{conversation['id']}")
        return found["messages"][0] if found["messages"][0]["direction"] == "out" else None

    reply = await wait_until(refused)
    assert (reply["status"], reply["error"]["code"]) == ("failed", "window_closed")
    assert "24-hour service window" in reply["error"]["message"]
    assert (reply["provider_message_id"], reply["statuses"]) == (None, [])


async def test_handoff_assign_and_resolve_change_the_owner_and_tell_the_observers(api: Api) -> None:
    conversation = await api.write("hello", sender=ANA)
    path = f"/api/v1/conversations/{conversation['id']}"

    queued = await api.ok("POST", f"{path}/handoff", {"reason": "wants to talk about a refund"})
    assert (queued["owner"], queued["assignee"]) == ("queued", None)
    assert "messages" not in queued
    assigned = await api.ok("POST", f"{path}/assign", {"operator": "maria"})
    assert (assigned["owner"], assigned["assignee"]) == ("assigned", "maria")
    released = await api.ok("POST", f"{path}/release")
    assert (released["owner"], released["assignee"]) == ("queued", None)
    await api.ok("POST", f"{path}/assign", {"operator": "maria"})
    resolved = await api.ok("POST", f"{path}/resolve")
    assert (resolved["owner"], resolved["assignee"]) == ("bot", None)

    events = (await api.ok("GET", path))["events"]
    assert [(e["change"], e["from"], e["to"], e["actor"], e["assignee"]) for e in events] == [
        ("queued", "bot", "queued", "api", None),
        ("assigned", "queued", "assigned", "api", "maria"),
        ("released", "assigned", "queued", "api", None),
        ("assigned", "queued", "assigned", "api", "maria"),
        ("resolved", "assigned", "bot", "api", None),
    ]
    assert [e["reason"] for e in events] == [
        "wants to talk about a refund",
        "assigned to maria through the API",
        "given back to the queue through the API",
        "assigned to maria through the API",
        "resolved through the API",
    ]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert [(seen.owner, change.change, change.actor) for seen, change in api.observer.seen] == [
        ("queued", "queued", "api"),
        ("assigned", "assigned", "api"),
        ("queued", "released", "api"),
        ("assigned", "assigned", "api"),
        ("bot", "resolved", "api"),
    ]
    assert {seen.id for seen, _ in api.observer.seen} == {conversation["id"]}


async def test_a_change_the_owner_does_not_allow_is_a_conflict_naming_the_owner(api: Api) -> None:
    conversation = await api.write("hello", sender=ANA)
    path = f"/api/v1/conversations/{conversation['id']}"

    status, answer = await api.call("POST", f"{path}/resolve", {})
    assert (status, answer["error"]["code"], answer["error"]["owner"]) == (409, "owner_conflict", "bot")
    assert "is owned by bot: resolve is allowed only while it is assigned, phone, queued" in answer["error"]["message"]

    await api.ok("POST", f"{path}/handoff")
    status, answer = await api.call("POST", f"{path}/handoff")
    assert (status, answer["error"]["owner"]) == (409, "queued")

    await api.ok("POST", f"{path}/assign", {"operator": "maria"})
    status, answer = await api.call("POST", f"{path}/assign", {"operator": "maria"})
    assert (status, answer["error"]["owner"], answer["error"]["assignee"]) == (409, "assigned", "maria")
    assert "already assigned to maria" in answer["error"]["message"]
    # Another operator may take it over.
    assert (await api.ok("POST", f"{path}/assign", {"operator": "joao"}))["assignee"] == "joao"
    assert len((await api.ok("GET", path))["events"]) == 3
    assert len(api.observer.seen) == 3  # refused changes are not announced


async def test_unknown_conversations_and_contacts_are_not_found(api: Api) -> None:
    for method, path in (
        ("GET", "/api/v1/conversations/999"),
        ("POST", "/api/v1/conversations/999/handoff"),
        ("POST", "/api/v1/conversations/999/resolve"),
        ("GET", "/api/v1/conversations/abc"),
        ("GET", "/api/v1/contacts/999"),
        ("GET", "/api/v1/contacts/0"),
    ):
        status, answer = await api.call(method, path)
        assert (status, answer["error"]["code"]) == (404, "not_found"), path
    status, answer = await api.call("POST", "/api/v1/conversations/999/assign", {"operator": "maria"})
    assert (status, answer["error"]["message"]) == (404, "no conversation 999")
    status, answer = await api.call("PATCH", "/api/v1/contacts/999", {"language": "en"})
    assert (status, answer["error"]["message"]) == (404, "no contact 999")
    assert api.observer.seen == []


@pytest.mark.parametrize(
    ("path", "params", "code", "parameter", "says"),
    [
        (
            "conversations",
            {"owner": "nobody"},
            "invalid_parameter",
            "owner",
            "one or more of bot, queued, assigned, phone",
        ),
        ("conversations", {"owner": "queued,"}, "invalid_parameter", "owner", "got an empty value"),
        ("conversations", {"limit": "0"}, "invalid_limit", "limit", "a whole number from 1 to 200"),
        ("conversations", {"limit": "201"}, "invalid_limit", "limit", "a whole number from 1 to 200"),
        ("conversations", {"limit": "ten"}, "invalid_limit", "limit", "a whole number from 1 to 200"),
        ("conversations", {"after": "-1"}, "invalid_cursor", "after", "from 1 to 9223372036854775807"),
        ("conversations", {"contact_id": "x"}, "invalid_parameter", "contact_id", "an id: a whole number"),
        ("conversations", {"updated_since": "yesterday"}, "invalid_parameter", "updated_since", "ISO 8601"),
        ("conversations", {"updated_since": "nan"}, "invalid_parameter", "updated_since", "unix seconds"),
        ("conversations", {"updated_since": "-5"}, "invalid_parameter", "updated_since", "from 1970 to 9999"),
        ("conversations", {"owners": "bot"}, "unknown_parameter", "owners", "this endpoint takes after, contact_id"),
        ("conversations/1", {"before": "0"}, "invalid_cursor", "before", "the 'next' of a previous page"),
        ("conversations/1", {"after": "3"}, "unknown_parameter", "after", "this endpoint takes before, limit"),
        ("contacts", {"limit": "1000"}, "invalid_limit", "limit", "from 1 to 200"),
        ("contacts", {"q": "x" * 200}, "invalid_parameter", "q", "1 to 128 printable characters"),
        ("contacts", {"after": "1.5"}, "invalid_cursor", "after", "a whole number"),
        ("contacts", {"name": "Ana"}, "unknown_parameter", "name", "this endpoint takes after, limit, q"),
    ],
)
async def test_bad_query_parameters_are_refused_naming_them(
    api: Api, path: str, params: dict[str, str], code: str, parameter: str, says: str
) -> None:
    await api.write("hello", sender=ANA)
    status, answer = await api.call("GET", f"/api/v1/{path}", **params)
    assert status == 400, answer
    assert (answer["error"]["code"], answer["error"]["parameter"]) == (code, parameter)
    assert parameter in answer["error"]["message"] and says in answer["error"]["message"]


async def test_a_parameter_given_twice_is_refused(api: Api) -> None:
    async with api.http.get(f"{api.daemon.url}/api/v1/conversations?limit=1&limit=2", headers=AUTH) as response:
        answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (400, "invalid_limit")
    assert answer["error"]["message"] == "limit is given 2 times: give it once"
    # A filter may be repeated instead of comma-separated.
    async with api.http.get(f"{api.daemon.url}/api/v1/conversations?owner=bot&owner=phone", headers=AUTH) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("change", "body", "says"),
    [
        ("handoff", [1], "the body must be a JSON object with reason"),
        ("handoff", {"reason": 5}, "reason must be text of 1 to 1000 characters"),
        ("handoff", {"reason": " "}, "reason must be text"),
        ("resolve", {"why": "done"}, "unknown key 'why': this change takes reason"),
        ("assign", {}, 'expected {"operator": "<name>"}'),
        ("assign", {"operator": "a\nb"}, "operator must be text of 1 to 128 printable characters"),
        ("assign", {"operator": "m" * 129}, "operator must be text of 1 to 128"),
    ],
)
async def test_bad_change_bodies_are_refused_and_change_nothing(api: Api, change: str, body: Any, says: str) -> None:
    conversation = await api.write("hello", sender=ANA)
    path = f"/api/v1/conversations/{conversation['id']}"
    status, answer = await api.call("POST", f"{path}/{change}", body)
    assert (status, answer["error"]["code"]) == (422, "invalid_change"), answer
    assert says in answer["error"]["message"]
    assert (await api.ok("GET", path))["events"] == []
