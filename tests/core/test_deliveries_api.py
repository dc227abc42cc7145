"""Operating the deliveries through the REST API, on SQLite and PostgreSQL: a
daemon with four ``crm:`` entries of a backend written here (one takes
everything, one is down and retried, one refuses for good, one is gone),
its deliveries listed, filtered, paged and shown, replayed once the other
side is back, the entries counted and a disabled one enabled, a contact's
sync state, and the hourly pruning of finished deliveries.

This module is also a plugin (``register_crm_backends`` below), so the
``wahub deliveries`` tests load it with ``-p``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import pluggy
import pytest
import voluptuous as vol

import wahub
from tests.helpers import AUTH, TOKEN
from wahub.core.crm import CRM_SCHEMA_BASE, CRMBackend
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent
from wahub.plugins import housekeeping
from wahub.testing import (
    ManualClock,
    RunningDaemon,
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    wait_until,
)

ANA, BRUNO = "15557000001", "15557000002"
DAY = 86400.0
#: The entries, in configuration order, and how each answers.
ENTRIES = {"books": "ok", "desk": "retry", "audit": "refuse", "hook": "gone"}
ERRORS = {
    "retry": "503: the CRM is busy",
    "refuse": "422: property 'phone' is not valid",
    "gone": "410: the hook was deleted",
}


class Scripted(CRMBackend):
    """A CRM each entry of which answers as its ``answer:`` says: ``ok``
    (taking the event and linking the contact to ``R<contact id>``),
    ``retry`` (a 503: tried again later), ``refuse`` (a 422: given up at
    once) or ``gone`` (a 410: the entry is disabled). An entry named in
    ``healed`` answers ``ok`` whatever its ``answer:``."""

    PLATFORM = "scripted"
    CONFIG_SCHEMA = CRM_SCHEMA_BASE.extend({vol.Required("answer"): vol.In(["ok", "retry", "refuse", "gone"])})
    healed: ClassVar[set[str]] = set()
    taken: ClassVar[list[tuple[str, str]]] = []

    async def deliver(self, event: IntegrationEvent) -> None:
        answer = "ok" if self.name in Scripted.healed else self.config["answer"]
        if answer == "retry":
            raise DeliveryFailed(ERRORS[answer], status=503)
        if answer == "refuse":
            raise DeliveryFailed(ERRORS[answer], status=422, permanent=True)
        if answer == "gone":
            raise DeliveryFailed(ERRORS[answer], status=410, gone=True)
        Scripted.taken.append((self.name, event.id))
        if event.contact_id is not None:
            await self.link("contact", event.contact_id, f"R{event.contact_id}")


@wahub.hookimpl
def register_crm_backends() -> Iterable[type[CRMBackend]]:
    return [Scripted]


def scripted_pm() -> pluggy.PluginManager:
    """The built-in plugins and this module."""
    return plugin_manager([sys.modules[__name__]])


def entries_raw() -> list[dict[str, Any]]:
    return [
        {"platform": "scripted", "name": name, "answer": answer, "events": ["message.received"]}
        for name, answer in ENTRIES.items()
    ]


def deliveries_config(database_url: str, **raw: Any) -> dict[str, Any]:
    """A daemon with the four entries, each taking the messages received."""
    config = {
        "wahub": {"api_tokens": [TOKEN]},
        "router": {"default_reply": "Hello!"},
        "crm": entries_raw(),
        **raw,
    }
    return build_config(config, database=database_url, pm=scripted_pm())


def ahead() -> ManualClock:
    """A clock that stands still a minute ahead of the real time: each change's
    deliveries are due at once, and nothing is retried until the test moves it."""
    return ManualClock(time.time() + 60)


async def settled(daemon: RunningDaemon, contacts: int) -> bool:
    """Whether each of ``contacts`` messages reached every entry once: taken,
    retried, given up, and the gone entry disabled."""
    rows, _ = await daemon.hub.storage.deliveries.listing(limit=200)
    if len(rows) != len(ENTRIES) * contacts:
        return False
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_entry.setdefault(row["endpoint"], []).append(row)
    return (
        all(row["state"] == "delivered" for row in by_entry["books"])
        and all(row["state"] == "pending" and row["attempts"] >= 1 for row in by_entry["desk"])
        and all(row["state"] == "failed" for row in by_entry["audit"])
        and await daemon.hub.storage.deliveries.disabled("hook") is not None
    )


async def users_write(daemon: RunningDaemon, *senders: str, text: str = "hi") -> None:
    """Each of ``senders`` writes ``text``; returns once every entry had its first try."""
    for sender in senders:
        await daemon.post_sandbox([sandbox_message(text, sender=sender, message_id=f"wamid.{sender}")])
    await wait_until(lambda: settled(daemon, len(senders)))


@dataclass
class Client:
    daemon: RunningDaemon
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        async with self.http.request(
            method, f"{self.daemon.url}{path}", json=body, params=params or None, headers=AUTH
        ) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert status == 200, answer
        return answer

    async def contact_id(self, address: str) -> int:
        [contact] = (await self.ok("GET", "/api/v1/contacts", q=address))["contacts"]
        return int(contact["id"])


@asynccontextmanager
async def client(database_url: str, clock: ManualClock | None = None) -> AsyncIterator[Client]:
    Scripted.healed, Scripted.taken = set(), []
    config = deliveries_config(database_url)
    async with (
        running_daemon(config, pm=scripted_pm(), clock=clock or ahead()) as daemon,
        aiohttp.ClientSession() as http,
    ):
        yield Client(daemon, http)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Client]:
    async with client(database_url) as running:
        yield running


def states(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(row["endpoint"], row["state"]) for row in page["deliveries"]]


async def test_deliveries_are_listed_newest_first_filtered_paged_and_shown(api: Client) -> None:
    await users_write(api.daemon, ANA, BRUNO)
    ana = await api.contact_id(ANA)

    everything = await api.ok("GET", "/api/v1/deliveries")
    ids = [row["id"] for row in everything["deliveries"]]
    assert len(ids) == 8 and ids == sorted(ids, reverse=True) and everything["next"] is None
    # Each message is one event, given to every entry under the same id.
    events: dict[str, set[str]] = {}
    for row in everything["deliveries"]:
        events.setdefault(row["endpoint"], set()).add(row["event_id"])
    assert len(events["books"]) == 2 and all(found == events["books"] for found in events.values())

    desk = await api.ok("GET", "/api/v1/deliveries", endpoint="desk")
    assert states(desk) == [("desk", "pending")] * 2
    for row in desk["deliveries"]:
        assert (row["last_status"], row["last_error"], row["type"]) == (503, ERRORS["retry"], "message.received")
        assert row["next_attempt_at"] > row["created_at"] and row["finished_at"] is None
        assert "payload" not in row
    failed = await api.ok("GET", "/api/v1/deliveries", state="failed")
    assert states(failed) == [("audit", "failed")] * 2
    assert all(row["finished_at"] is not None for row in failed["deliveries"])
    mine = await api.ok("GET", "/api/v1/deliveries", contact_id=str(ana))
    assert sorted(states(mine)) == [
        ("audit", "failed"),
        ("books", "delivered"),
        ("desk", "pending"),
        ("hook", "pending"),
    ]
    assert (await api.ok("GET", "/api/v1/deliveries", contact_id=str(ana), state="delivered"))["deliveries"][0][
        "endpoint"
    ] == "books"

    paged, after = [], None
    while True:
        page = await api.ok("GET", "/api/v1/deliveries", limit="3", **({"after": str(after)} if after else {}))
        paged += [row["id"] for row in page["deliveries"]]
        after = page["next"]
        if after is None:
            break
    assert paged == ids

    [books] = (await api.ok("GET", "/api/v1/deliveries", endpoint="books", contact_id=str(ana)))["deliveries"]
    one = await api.ok("GET", f"/api/v1/deliveries/{books['id']}")
    assert {key: one[key] for key in books} == books
    assert one["payload"]["type"] == "message.received"
    assert one["payload"]["data"]["message"]["text"] == "hi"
    assert one["payload"]["data"]["contact"]["id"] == ana


#: Listing filters that are refused: the query, and the status, code and message of the answer.
BAD_FILTERS = [
    ({"endpoint": "nope"}, 404, "unknown_endpoint", "no crm: entry named 'nope' (the entries: books, desk, audit"),
    ({"state": "lost"}, 400, "invalid_parameter", "state must be one of pending, delivered, failed"),
    ({"contact_id": "ana"}, 400, "invalid_parameter", "contact_id must be an id"),
    ({"colour": "red"}, 400, "unknown_parameter", "unknown query parameter 'colour'"),
    ({"limit": "0"}, 400, "invalid_limit", "limit must be a whole number from 1 to 200"),
]


async def test_bad_listing_filters_are_refused_naming_the_parameter(api: Client) -> None:
    for params, status, code, says in BAD_FILTERS:
        answer_status, answer = await api.call("GET", "/api/v1/deliveries", **params)
        assert answer_status == status, (params, answer)
        assert answer["error"]["code"] == code and says in answer["error"]["message"], (params, answer)


async def test_replays_deliver_again_once_the_other_side_is_back(api: Client) -> None:
    await users_write(api.daemon, ANA, BRUNO)
    ana, bruno = await api.contact_id(ANA), await api.contact_id(BRUNO)
    failed = {
        row["contact_id"]: row["id"]
        for row in (await api.ok("GET", "/api/v1/deliveries", state="failed"))["deliveries"]
    }
    Scripted.healed.add("audit")

    assert await api.ok("POST", "/api/v1/deliveries/retry", {"ids": [failed[ana]]}) == {"retried": [failed[ana]]}

    async def delivered(delivery_id: int) -> bool:
        found = await api.ok("GET", f"/api/v1/deliveries/{delivery_id}")
        return bool(found["state"] == "delivered")

    await wait_until(lambda: delivered(failed[ana]))
    shown = await api.ok("GET", f"/api/v1/deliveries/{failed[ana]}")
    # A replay starts a fresh schedule: the attempt that delivered it is its first.
    assert (shown["attempts"], shown["last_error"], shown["first_failed_at"]) == (1, None, None)
    assert (await api.ok("GET", f"/api/v1/deliveries/{failed[bruno]}"))["state"] == "failed"

    answer = await api.ok("POST", "/api/v1/deliveries/retry", {"failed": True, "endpoint": "audit"})
    assert answer == {"retried": [failed[bruno]]}
    await wait_until(lambda: delivered(failed[bruno]))
    assert await api.ok("POST", "/api/v1/deliveries/retry", {"failed": True}) == {"retried": []}
    assert sorted(event for name, event in Scripted.taken if name == "audit") == sorted(
        row["event_id"] for row in (await api.ok("GET", "/api/v1/deliveries", endpoint="audit"))["deliveries"]
    )


#: Retries that are refused: the body, and the status, code and message of the answer.
BAD_RETRIES: list[tuple[dict[str, Any], int, str, str]] = [
    ({"ids": [999999]}, 404, "not_found", "no delivery 999999: nothing was retried"),
    ({}, 422, "invalid_retry", 'give "ids", or "failed": true'),
    ({"ids": [1], "failed": True}, 422, "invalid_retry", 'give "ids", or "failed": true'),
    ({"ids": [1], "endpoint": "audit"}, 422, "invalid_retry", "$.endpoint: an endpoint goes with"),
    ({"failed": False}, 422, "invalid_retry", "$.failed: True was expected"),
    ({"ids": []}, 422, "invalid_retry", "$.ids: [] should be non-empty"),
    ({"failed": True, "endpoint": "nope"}, 404, "unknown_endpoint", "no crm: entry named 'nope'"),
]


async def test_bad_retries_are_refused_and_retry_nothing(api: Client) -> None:
    await users_write(api.daemon, ANA)
    before = await api.ok("GET", "/api/v1/deliveries")
    # One of them exists: a refused request that names it must not replay it.
    existing = before["deliveries"][0]["id"]

    for body, status, code, says in [*BAD_RETRIES, ({"ids": [existing, 999999]}, 404, "not_found", "999999")]:
        answer_status, answer = await api.call("POST", "/api/v1/deliveries/retry", body)

        assert answer_status == status, (body, answer)
        assert answer["error"]["code"] == code and says in answer["error"]["message"], (body, answer)
    assert await api.ok("GET", "/api/v1/deliveries") == before


async def test_entries_are_counted_and_a_gone_one_is_enabled_again(api: Client) -> None:
    await users_write(api.daemon, ANA)

    listed = (await api.ok("GET", "/api/v1/crm"))["entries"]

    assert [(entry["name"], entry["platform"], entry["configured"]) for entry in listed] == [
        (name, "scripted", True) for name in ENTRIES
    ]
    assert all(entry["events"] == ["message.received"] for entry in listed)
    counts = {entry["name"]: entry["counts"] for entry in listed}
    assert counts == {
        "books": {"pending": 0, "delivered": 1, "failed": 0},
        "desk": {"pending": 1, "delivered": 0, "failed": 0},
        "audit": {"pending": 0, "delivered": 0, "failed": 1},
        "hook": {"pending": 1, "delivered": 0, "failed": 0},
    }
    disabled = {entry["name"]: entry["disabled"] for entry in listed}
    assert disabled["hook"]["reason"] == ERRORS["gone"] and disabled["hook"]["at"] > 0
    assert [name for name, value in disabled.items() if value is not None] == ["hook"]

    Scripted.healed.add("hook")
    enabled = await api.ok("POST", "/api/v1/crm/hook/enable")

    assert (enabled["name"], enabled["disabled"], enabled["was_disabled"]) == ("hook", None, True)

    async def hook_delivered() -> bool:
        [entry] = [entry for entry in (await api.ok("GET", "/api/v1/crm"))["entries"] if entry["name"] == "hook"]
        return bool(entry["counts"] == {"pending": 0, "delivered": 1, "failed": 0})

    await wait_until(hook_delivered)
    again = await api.ok("POST", "/api/v1/crm/hook/enable")
    assert (again["disabled"], again["was_disabled"]) == (None, False)
    status, answer = await api.call("POST", "/api/v1/crm/nope/enable")
    assert (status, answer["error"]["code"]) == (404, "unknown_endpoint")
    assert "the entries: books, desk, audit, hook" in answer["error"]["message"]


async def test_a_contact_shows_where_it_stands_with_each_entry(api: Client) -> None:
    await users_write(api.daemon, ANA)
    ana = await api.contact_id(ANA)

    contact = await api.ok("GET", f"/api/v1/contacts/{ana}")

    sync = {entry["endpoint"]: entry for entry in contact["sync"]}
    assert list(sync) == ["audit", "books", "desk", "hook"]
    assert all(entry["platform"] == "scripted" for entry in sync.values())
    books = sync["books"]
    assert (books["pending"], books["failed"], books["last_error"], books["remote_id"]) == (0, 0, None, f"R{ana}")
    assert books["delivered_at"] is not None and books["next_attempt_at"] is None
    desk = sync["desk"]
    assert (desk["pending"], desk["failed"], desk["last_error"], desk["remote_id"]) == (1, 0, ERRORS["retry"], None)
    assert desk["next_attempt_at"] > time.time() and desk["delivered_at"] is None
    assert (sync["audit"]["failed"], sync["audit"]["pending"], sync["audit"]["delivered_at"]) == (1, 0, None)
    assert (sync["hook"]["pending"], sync["hook"]["last_error"], sync["hook"]["disabled"]) == (1, ERRORS["gone"], True)
    assert [name for name, entry in sync.items() if entry["disabled"]] == ["hook"]
    assert {"kind": "crm:books", "value": f"R{ana}"} in contact["identities"]
    # The PATCH answers like the GET.
    changed = await api.ok("PATCH", f"/api/v1/contacts/{ana}", {"tags": ["vip"]})
    assert changed["sync"] == contact["sync"]


async def test_finished_deliveries_are_pruned_hourly_after_7_and_30_days(database_url: str) -> None:
    clock = ahead()
    async with client(database_url, clock) as api:
        hub = api.daemon.hub
        await users_write(api.daemon, ANA)
        [job] = [job for job in housekeeping.scheduled_jobs(hub) if job.id == "wahub.prune_deliveries"]
        assert (job.trigger, job.trigger_args) == ("interval", {"hours": 1})

        async def left() -> list[tuple[str, str]]:
            return sorted(states(await api.ok("GET", "/api/v1/deliveries")))

        everything = await left()
        await job.func(hub)
        assert await left() == everything

        clock.advance(7 * DAY + 60)
        await job.func(hub)
        # Delivered a week ago: gone. Given up, or still pending (a retry came due meanwhile): kept.
        assert await left() == [("audit", "failed"), ("desk", "pending"), ("hook", "pending")]

        clock.advance(23 * DAY)
        await job.func(hub)
        assert await left() == [("desk", "pending"), ("hook", "pending")]
