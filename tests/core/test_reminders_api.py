"""The REST API's reminders on a running daemon with a clock moved by hand:
creating one (at a time, before an event, on a cron), the errors that name
the field, listing the configured ones read-only, and cancelling."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import sqlalchemy as sa

from tests.helpers import AUTH, TOKEN
from wahub.core.hub import Hub
from wahub.core.outbound.reminders import fire_due
from wahub.core.storage.schema import campaigns
from wahub.testing import ManualClock, RunningDaemon, build_config, plugin_manager, running_daemon, wait_until

DAY = 86400.0
SAO_PAULO = dt.timezone(dt.timedelta(hours=-3))
CONFIGURED = {"name": "digest", "cron": "0 9 * * mon", "timezone": "Europe/Lisbon", "template": "digest", "to": ["1"]}


@dataclass
class Client:
    daemon: RunningDaemon
    http: aiohttp.ClientSession
    clock: ManualClock

    @property
    def hub(self) -> Hub:
        return self.daemon.hub

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        async with self.http.request(
            method, f"{self.daemon.url}/api/v1{path}", json=body, headers={**AUTH, **headers}
        ) as response:
            return response.status, await response.json()


@asynccontextmanager
async def reminders_api(database_url: str) -> AsyncIterator[Client]:
    pm = plugin_manager()
    raw = {"wahub": {"api_tokens": [TOKEN], "timezone": "Europe/Lisbon"}, "reminders": [CONFIGURED]}
    config = build_config(raw, database=database_url, pm=pm)
    clock = ManualClock(time.time())
    async with running_daemon(config, pm=pm, clock=clock) as daemon, aiohttp.ClientSession() as http:
        yield Client(daemon, http, clock)


def iso(instant: float, zone: dt.tzinfo = dt.UTC) -> str:
    return dt.datetime.fromtimestamp(instant, zone).isoformat()


async def test_an_appointment_reminder_fires_a_day_before_the_event(database_url: str) -> None:
    async with reminders_api(database_url) as api:
        event_at = round(api.clock.now + 10 * DAY)
        body = {
            "to": "5511987650001",
            "template": "appointment",
            "parameters": {"1": "Dr. Silva"},
            "before": {"event_at": iso(event_at, SAO_PAULO), "offset": "1d"},
        }
        status, created = await api.call("POST", "/reminders", body, **{"Idempotency-Key": "appointment-7"})
        assert status == 201, created
        assert created["next_fire_at"] == event_at - DAY
        assert created["event_at"] == event_at
        assert (created["state"], created["fired"], created["skipped"], created["notifications"]) == (
            "active",
            0,
            0,
            [],
        )
        assert created["audience"] == {"to": ["5511987650001"]}
        again = await api.call("POST", "/reminders", body, **{"Idempotency-Key": "appointment-7"})
        assert again == (200, created)

        api.clock.set(event_at - DAY)
        await fire_due(api.hub)  # or the daemon's own job, whichever runs first

        async def fired() -> Any:
            _, shown = await api.call("GET", f"/reminders/{created['id']}")
            return shown if shown["notifications"] else None

        shown = await wait_until(fired)
        assert (shown["state"], shown["fired"], shown["next_fire_at"]) == ("done", 1, None)
        async with api.hub.storage.db.connect() as conn:
            keys = (await conn.execute(sa.select(campaigns.c.idempotency_key))).scalars().all()
        assert keys == [f"schedule:{created['id']}:{event_at - int(DAY)}"]


async def test_reminders_at_a_time_and_on_a_cron(database_url: str) -> None:
    async with reminders_api(database_url) as api:
        at = round(api.clock.now + 3600)
        status, once = await api.call("POST", "/reminders", {"to": ["1", "2"], "template": "t", "at": iso(at)})
        assert status == 201, once
        assert once["next_fire_at"] == at and once["cron"] is None

        body = {"to": "1", "message": {"type": "text", "text": {"body": "Stand-up!"}}}
        status, weekly = await api.call(
            "POST", "/reminders", {**body, "cron": "0 9 * * mon", "timezone": "Asia/Kolkata"}
        )
        assert status == 201, weekly
        first = dt.datetime.fromtimestamp(weekly["next_fire_at"], ZoneInfo("Asia/Kolkata"))
        assert (first.weekday(), first.hour, first.minute) == (0, 9, 0)
        assert 0 < first.timestamp() - api.clock.now <= 7 * DAY
        assert weekly["message"] == body["message"] and weekly["template"] is None

        api.clock.set(at)  # the daemon's own job fires it, on this replica: the scheduler's

        async def fired() -> Any:
            _, shown = await api.call("GET", f"/reminders/{once['id']}")
            return shown if shown["fired"] else None

        shown = await wait_until(fired)
        assert (shown["state"], len(shown["notifications"])) == ("done", 1)


ERRORS = [
    ({"template": "t", "at": "2020-01-01T00:00:00Z"}, "$.at", "in the past"),
    ({"template": "t", "at": "2099-01-01T00:00:00"}, "$.at", "no offset"),
    ({"template": "t", "at": "next monday"}, "$.at", "not an ISO 8601 time"),
    ({"template": "t", "before": {"event_at": "2020-01-01T10:00:00+01:00", "offset": "24h"}}, "$.before", "past"),
    ({"template": "t", "before": {"event_at": "2099-01-01T10:00:00+01:00", "offset": "1w"}}, "$.before.offset", ""),
    ({"template": "t", "cron": "61 9 * * *", "timezone": "UTC"}, "$.cron", "minute field"),
    ({"template": "t", "cron": "0 9 * * *"}, "$.timezone", "needs its timezone"),
    ({"template": "t", "cron": "0 9 * * *", "timezone": "Mars/Base"}, "$.timezone", "unknown time zone"),
    ({"template": "t", "at": "2099-01-01T00:00:00Z", "cron": "0 9 * * *"}, "$", "exactly one of at, before or cron"),
    ({"template": "t"}, "$", "exactly one of at, before or cron"),
    ({"at": "2099-01-01T00:00:00Z"}, "$.template", "a template or a message"),
    ({"template": "t", "message": {"type": "text"}, "at": "2099-01-01T00:00:00Z"}, "$.template", "not both"),
    ({"message": {"type": "text", "text": {}}, "at": "2099-01-01T00:00:00Z"}, "$.message.text.body", ""),
    ({"template": "t", "language": "english", "at": "2099-01-01T00:00:00Z"}, "$.language", "language code"),
    ({"template": "t", "provider": "nope", "at": "2099-01-01T00:00:00Z"}, "$.provider", "nope"),
    ({"template": "t", "at": "2099-01-01T00:00:00Z", "when": "soon"}, "$", "when"),
    ({"to": [], "template": "t", "at": "2099-01-01T00:00:00Z"}, "$.to", ""),
]


async def test_every_refusal_names_the_field(database_url: str) -> None:
    async with reminders_api(database_url) as api:
        for body, field, words in ERRORS:
            status, answer = await api.call("POST", "/reminders", {"to": "1", **body})
            assert status == 422, (body, answer)
            assert answer["error"]["field"] == field, (body, answer)
            assert words in answer["error"]["message"], (body, answer)
            assert answer["error"]["message"].startswith(field), (body, answer)
        _, listed = await api.call("GET", "/reminders")
        assert [row["source"] for row in listed["reminders"]] == ["config"]  # nothing was created


async def test_configured_reminders_are_listed_read_only_and_api_ones_cancel(database_url: str) -> None:
    async with reminders_api(database_url) as api:

        async def configured() -> Any:
            _, listed = await api.call("GET", "/reminders")
            return listed["reminders"]

        [row] = await wait_until(configured)  # synced when the daemon took the scheduler role
        assert (row["name"], row["source"], row["cron"], row["timezone"]) == (
            "config:digest",
            "config",
            "0 9 * * mon",
            "Europe/Lisbon",
        )
        status, refused = await api.call("DELETE", f"/reminders/{row['id']}")
        assert status == 409 and refused["error"]["code"] == "configured_reminder"
        assert "reminders: digest" in refused["error"]["message"]

        at = iso(api.clock.now + DAY)
        _, created = await api.call("POST", "/reminders", {"to": "1", "template": "t", "at": at})
        status, cancelled = await api.call("DELETE", f"/reminders/{created['id']}")
        assert status == 200
        assert (cancelled["state"], cancelled["next_fire_at"]) == ("cancelled", None)
        api.clock.advance(2 * DAY)
        await fire_due(api.hub)
        _, still = await api.call("GET", f"/reminders/{created['id']}")
        assert (still["state"], still["fired"], still["notifications"]) == ("cancelled", 0, [])

        status, first = await api.call("GET", "/reminders?limit=1")
        assert status == 200 and [item["id"] for item in first["reminders"]] == [row["id"]]
        _, second = await api.call("GET", f"/reminders?limit=1&after={first['next']}")
        assert [item["id"] for item in second["reminders"]] == [created["id"]] and second["next"] is None

        assert (await api.call("DELETE", "/reminders/999999"))[0] == 404
        assert (await api.call("GET", "/reminders/999999"))[0] == 404
        assert (await api.call("GET", "/reminders/abc"))[0] == 404


HOSTILE = [
    ({"before": {"event_at": "2099-01-01T10:00:00+01:00", "offset": f"{'9' * 400}d"}}, "$.before.offset"),
    ({"before": {"event_at": "2099-01-01T10:00:00+01:00", "offset": f"{'9' * 5000}m"}}, "$.before.offset"),
    ({"before": {"event_at": "2099-01-01T10:00:00+01:00", "offset": "367d"}}, "$.before.offset"),
    ({"before": {"event_at": "0001-01-01T00:30:00+00:00", "offset": "1h"}}, "$.before.event_at"),
    ({"at": "9999-12-31T23:59:59-23:59"}, "$.at"),
    ({"cron": "² 9 * * *", "timezone": "UTC"}, "$.cron"),
    ({"cron": f"0 {'9' * 5000} * * *", "timezone": "UTC"}, "$.cron"),
    ({"at": "2099-01-01T00:00:00Z", "parameters": {"1": {"nested": True}}}, "$.parameters.1"),
    ({"at": "2099-01-01T00:00:00Z", "parameters": {"Bad Name": "x"}}, "$.parameters"),
    ({"at": "2099-01-01T00:00:00Z", "parameters": {"buttons": {"0": ["x"]}}}, "$.parameters.buttons.0"),
    ({"at": "2099-01-01T00:00:00Z", "parameters": {"header": {"image": "x", "video": "y"}}}, "$.parameters.header"),
]


async def test_hostile_times_offsets_crons_and_parameters_are_refused_naming_the_field(database_url: str) -> None:
    async with reminders_api(database_url) as api:
        for body, field in HOSTILE:
            status, answer = await api.call("POST", "/reminders", {"to": "1", "template": "t", **body})
            assert status == 422, (str(body)[:80], answer)
            assert answer["error"]["field"].startswith(field), (str(body)[:80], answer)
        _, latest = await api.call("POST", "/reminders", {"to": "1", "template": "t", "at": "9999-12-31T23:59:59Z"})
        assert latest["next_fire_at"] == 253402300799.0
        status, listed = await api.call("GET", "/reminders")
        assert status == 200 and [row["id"] for row in listed["reminders"]][-1] == latest["id"]


async def test_cancelling_a_reminder_stops_the_notification_it_has_not_finished(database_url: str) -> None:
    async with reminders_api(database_url) as api:
        at = iso(api.clock.now + DAY)
        body = {"to": ["1", "2"], "template": "t", "parameters": {"1": "Ana", "header": "Hi"}, "at": at}
        status, created = await api.call("POST", "/reminders", body)
        assert status == 201, created
        assert (created["notifications"], created["notifications_count"]) == ([], 0)
        # A notification of its firing that is still to be written out.
        waiting, _ = await api.hub.storage.campaigns.create(
            provider="sandbox",
            template="t",
            audience={"to": ["1", "2"]},
            source=f"reminder:{created['name']}",
            idempotency_key=f"schedule:{created['id']}:{int(created['next_fire_at'])}",
            now=api.clock.now,
            send_at=api.clock.now + 2 * DAY,
        )
        _, shown = await api.call("GET", f"/reminders/{created['id']}")
        assert (shown["notifications"], shown["notifications_count"]) == ([waiting], 1)
        status, cancelled = await api.call("DELETE", f"/reminders/{created['id']}")
        assert status == 200, cancelled
        assert (cancelled["state"], cancelled["cancelled_notifications"]) == ("cancelled", [waiting])
        _, notification = await api.call("GET", f"/notifications/{waiting}")
        assert notification["state"] == "cancelled"
        _, again = await api.call("DELETE", f"/reminders/{created['id']}")
        assert again["cancelled_notifications"] == []
