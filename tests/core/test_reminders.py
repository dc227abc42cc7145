"""Reminders firing from the schedules table, on SQLite and PostgreSQL, with a
clock moved by hand: local times across daylight-saving changes, one campaign
per occurrence however many replicas fire, misfires, and the configured
reminders kept in step with their contacts' zones."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from wahub.core.hub import Hub
from wahub.core.metrics import Metrics
from wahub.core.outbound.reminders import fire_due, sync_config_reminders
from wahub.core.storage.schedules import ScheduleSpec
from wahub.core.storage.schema import campaigns, contacts
from wahub.core.storage.store import Storage
from wahub.testing import ManualClock, build_config, plugin_manager

LISBON = ZoneInfo("Europe/Lisbon")
HOUR = 3600.0


def at(text: str, zone: ZoneInfo = LISBON) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(instant: float, zone: ZoneInfo = LISBON) -> str:
    return dt.datetime.fromtimestamp(instant, zone).isoformat()


def make_hub(storage: Storage, database_url: str, raw: Mapping[str, Any], start: float) -> Hub:
    pm = plugin_manager()
    hub = Hub(config=build_config(raw, database=database_url, pm=pm), pm=pm, metrics=Metrics())
    hub.storage = storage
    hub.clock = ManualClock(start)
    return hub


def reminder(**overrides: Any) -> dict[str, Any]:
    return {"name": "weekly", "cron": "0 9 * * mon", "template": "digest", "to": ["15551230001"], **overrides}


def counted(hub: Hub, outcome: str, reason: str = "") -> float:
    value = hub.metrics.registry.get_sample_value(
        "wahub_reminder_firings_total", {"outcome": outcome, "reason": reason}
    )
    return value or 0.0


async def campaign_rows(storage: Storage) -> list[Any]:
    async with storage.db.connect() as conn:
        return list((await conn.execute(sa.select(campaigns).order_by(campaigns.c.id))).all())


async def add_contact(storage: Storage, address: str, tags: list[str], zone: str | None) -> None:
    now = time.time()
    async with storage.db.begin() as conn:
        await conn.execute(
            contacts.insert().values(
                provider="sandbox", address=address, tags=tags, timezone=zone, created_at=now, updated_at=now
            )
        )


async def run_clock(hub: Hub, until: float, step: float) -> list[float]:
    """Move the clock in ``step``s, firing at each, as the daemon's job does; the occurrences fired."""
    clock = hub.clock
    assert isinstance(clock, ManualClock)
    fired = []
    while clock.now < until:
        clock.advance(step)
        fired += [firing.occurrence for firing in await fire_due(hub) if firing.campaign_id is not None]
    return fired


async def test_weekly_reminder_fires_at_nine_local_on_the_mondays_around_both_changes(
    storage: Storage, database_url: str
) -> None:
    raw = {"reminders": [reminder(timezone="Europe/Lisbon")]}
    hub = make_hub(storage, database_url, raw, at("2026-03-20T00:00"))
    result = await sync_config_reminders(hub, hub.config["reminders"])
    assert result.created == ["config:weekly"]
    spring = await run_clock(hub, at("2026-04-07T00:00"), 20 * 60)
    assert [local(instant) for instant in spring] == [
        "2026-03-23T09:00:00+00:00",
        "2026-03-30T09:00:00+01:00",
        "2026-04-06T09:00:00+01:00",
    ]
    assert isinstance(hub.clock, ManualClock)
    hub.clock.set(at("2026-10-18T00:00"))
    await sync_config_reminders(hub, hub.config["reminders"])  # the next firing is kept
    assert [local(instant) for instant in await run_clock(hub, at("2026-11-03T00:00"), 20 * 60)] == [
        "2026-10-19T09:00:00+01:00",
        "2026-10-26T09:00:00+00:00",
        "2026-11-02T09:00:00+00:00",
    ]
    row = await storage.schedules.get_by_name("config:weekly")
    assert row is not None
    rows = await campaign_rows(storage)
    assert [campaign.idempotency_key for campaign in rows[:1]] == [f"schedule:{row['id']}:{int(spring[0])}"]
    assert {campaign.source for campaign in rows} == {"reminder:config:weekly"}
    assert rows[0].template == "digest" and rows[0].audience == {"to": ["15551230001"]}
    assert row["fired"] == len(rows) == 6
    assert row["skipped"] == 27  # the Mondays of 13 April to 12 October, jumped over by the clock
    assert row["next_fire_at"] == at("2026-11-09T09:00")
    assert hub.campaigns_ready.is_set()


async def test_daily_half_past_one_fires_once_on_the_gap_and_the_fold_days(storage: Storage, database_url: str) -> None:
    raw = {"reminders": [reminder(name="daily", cron="30 1 * * *", timezone="Europe/Lisbon")]}
    hub = make_hub(storage, database_url, raw, at("2026-03-28T12:00"))
    await sync_config_reminders(hub, hub.config["reminders"])
    spring = await run_clock(hub, at("2026-03-30T12:00"), 5 * 60)
    assert [local(instant) for instant in spring] == ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
    assert isinstance(hub.clock, ManualClock)
    hub.clock.set(at("2026-10-24T12:00"))
    await sync_config_reminders(hub, hub.config["reminders"])
    autumn = await run_clock(hub, at("2026-10-26T12:00"), 5 * 60)
    assert [local(instant) for instant in autumn] == ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]
    assert counted(hub, "fired") == 4


@pytest.mark.postgres
async def test_three_replicas_firing_at_once_make_one_campaign(postgres_url: str) -> None:
    stores = [await Storage.open(postgres_url) for _ in range(3)]
    try:
        fire_at = at("2026-05-04T09:00")
        spec = ScheduleSpec(provider="sandbox", audience={"to": ["15551230001"]}, misfire_grace=HOUR, template="t")
        row, _ = await stores[0].schedules.create_api(
            spec, next_fire_at=fire_at, now=fire_at - HOUR, idempotency_key="k"
        )
        hubs = [make_hub(store, postgres_url, {}, fire_at) for store in stores]
        results = await asyncio.gather(*(fire_due(hub) for hub in hubs))
        fired = [firing for firings in results for firing in firings]
        assert len(fired) == 1 and fired[0].campaign_id is not None
        [campaign] = await campaign_rows(stores[0])
        assert campaign.idempotency_key == f"schedule:{row['id']}:{int(fire_at)}"
        after = await stores[1].schedules.get(row["id"])
        assert after is not None and after["state"] == "done" and after["fired"] == 1
    finally:
        for store in stores:
            await store.close()


async def one_shot(storage: Storage, fire_at: float, key: str) -> int:
    spec = ScheduleSpec(provider="sandbox", audience={"to": ["15551230001"]}, misfire_grace=HOUR, template="t")
    row, _ = await storage.schedules.create_api(spec, next_fire_at=fire_at, now=fire_at - HOUR, idempotency_key=key)
    return int(row["id"])


async def test_a_firing_missed_while_down_goes_late_inside_the_grace_and_is_skipped_past_it(
    storage: Storage, database_url: str
) -> None:
    fire_at = at("2026-05-04T09:00")
    late_id = await one_shot(storage, fire_at, "late")
    hub = make_hub(storage, database_url, {}, fire_at + 30 * 60)
    [firing] = await fire_due(hub)
    assert (firing.schedule_id, firing.outcome, firing.late) == (late_id, "fired_late", 30 * 60)
    assert firing.campaign_id is not None
    assert counted(hub, "fired_late") == 1

    gone_id = await one_shot(storage, fire_at, "gone")
    assert isinstance(hub.clock, ManualClock)
    hub.clock.set(fire_at + 2 * HOUR)
    [skipped] = await fire_due(hub)
    assert (skipped.schedule_id, skipped.outcome, skipped.campaign_id) == (gone_id, "skipped", None)
    assert skipped.skipped == {"misfire_grace_passed": 1}
    row = await storage.schedules.get(gone_id)
    assert row is not None and (row["state"], row["fired"], row["skipped"], row["next_fire_at"]) == ("done", 0, 1, None)
    assert counted(hub, "skipped", "misfire_grace_passed") == 1
    assert len(await campaign_rows(storage)) == 1


async def test_days_missed_are_skipped_and_today_goes_late(storage: Storage, database_url: str) -> None:
    raw = {"reminders": [reminder(name="daily", cron="0 9 * * *", timezone="Europe/Lisbon")]}
    hub = make_hub(storage, database_url, raw, at("2026-05-04T08:00"))
    await sync_config_reminders(hub, hub.config["reminders"])
    assert isinstance(hub.clock, ManualClock)
    hub.clock.set(at("2026-05-07T09:10"))  # down from before the 4th's firing
    [firing] = await fire_due(hub)
    assert (firing.outcome, local(firing.occurrence)) == ("fired_late", "2026-05-07T09:00:00+01:00")
    assert firing.skipped == {"misfire_grace_passed": 3}
    row = await storage.schedules.get_by_name("config:daily")
    assert row is not None and (row["fired"], row["skipped"]) == (1, 3)
    assert row["next_fire_at"] == at("2026-05-08T09:00")
    assert counted(hub, "skipped", "misfire_grace_passed") == 3


async def test_config_rows_follow_the_zones_of_the_contacts(storage: Storage, database_url: str) -> None:
    await add_contact(storage, "15551230001", ["vip"], None)
    await add_contact(storage, "15551230002", ["vip", "new"], "America/New_York")
    await add_contact(storage, "15551230003", ["other"], "Asia/Kolkata")
    configured = reminder(name="daily", cron="0 9 * * *", to={"tags": ["vip"]})
    raw = {"wahub": {"timezone": "Europe/Lisbon"}, "reminders": [configured]}
    hub = make_hub(storage, database_url, raw, at("2026-05-04T12:00"))
    result = await sync_config_reminders(hub, hub.config["reminders"])
    assert result.created == ["config:daily@America/New_York", "config:daily@Europe/Lisbon"]
    new_york = await storage.schedules.get_by_name("config:daily@America/New_York")
    assert new_york is not None
    assert new_york["audience"] == {"segment": {"tags": ["vip"], "timezone": "America/New_York"}}
    assert (
        local(new_york["next_fire_at"], ZoneInfo("America/New_York")) == "2026-05-04T09:00:00-04:00"
    )  # 07:00 there now

    await add_contact(storage, "15551230004", ["vip"], "Asia/Kolkata")
    result = await sync_config_reminders(hub, hub.config["reminders"])
    assert (result.created, result.updated, result.cancelled) == (["config:daily@Asia/Kolkata"], [], [])
    kolkata = await storage.schedules.get_by_name("config:daily@Asia/Kolkata")
    assert kolkata is not None
    assert local(kolkata["next_fire_at"], ZoneInfo("Asia/Kolkata")) == "2026-05-05T09:00:00+05:30"

    changed = [{**hub.config["reminders"][0], "template": "digest_v2"}]
    result = await sync_config_reminders(hub, changed)
    assert len(result.updated) == 3 and not result.created
    kept = await storage.schedules.get_by_name("config:daily@Asia/Kolkata")
    assert kept is not None and kept["template"] == "digest_v2"
    assert kept["next_fire_at"] == kolkata["next_fire_at"]

    moved = [{**changed[0], "cron": "0 18 * * *"}]
    await sync_config_reminders(hub, moved)
    later = await storage.schedules.get_by_name("config:daily@Asia/Kolkata")
    assert later is not None
    assert local(later["next_fire_at"], ZoneInfo("Asia/Kolkata")) == "2026-05-04T18:00:00+05:30"

    result = await sync_config_reminders(hub, [])
    assert len(result.cancelled) == 3
    gone = await storage.schedules.get_by_name("config:daily@Europe/Lisbon")
    assert gone is not None and (gone["state"], gone["next_fire_at"]) == ("cancelled", None)
    assert await fire_due(hub) == []


async def test_config_addresses_are_grouped_by_their_contacts_zone(storage: Storage, database_url: str) -> None:
    await add_contact(storage, "15551230002", [], "America/New_York")
    configured = reminder(to=["15551230001", "15551230002"])
    hub = make_hub(storage, database_url, {"reminders": [configured]}, at("2026-05-04T12:00"))
    await sync_config_reminders(hub, hub.config["reminders"])
    utc = await storage.schedules.get_by_name("config:weekly@UTC")
    new_york = await storage.schedules.get_by_name("config:weekly@America/New_York")
    assert utc is not None and utc["audience"] == {"to": ["15551230001"]}
    assert new_york is not None and new_york["audience"] == {"to": ["15551230002"]}
    assert local(utc["next_fire_at"], ZoneInfo("UTC")) == "2026-05-11T09:00:00+00:00"


async def test_a_week_down_is_caught_up_in_one_step_with_every_minute_counted(
    storage: Storage, database_url: str
) -> None:
    raw = {"reminders": [reminder(name="often", cron="* * * * *", timezone="UTC")]}
    start = at("2026-05-04T08:00:30", ZoneInfo("UTC"))
    hub = make_hub(storage, database_url, raw, start)
    await sync_config_reminders(hub, hub.config["reminders"])
    assert isinstance(hub.clock, ManualClock)
    hub.clock.set(start + 7 * 86400)  # down for a week: 10080 minutes came due, the latest goes
    [firing] = await fire_due(hub)
    assert (firing.outcome, local(firing.occurrence, ZoneInfo("UTC"))) == ("fired", "2026-05-11T08:00:00+00:00")
    # The minutes of the last hour (its grace) are superseded by the latest; the older ones came too late.
    assert firing.skipped == {"misfire_grace_passed": 10079 - 59, "superseded": 59}
    row = await storage.schedules.get_by_name("config:often")
    assert row is not None and (row["fired"], row["skipped"]) == (1, 10079)
    assert row["next_fire_at"] == at("2026-05-11T08:01", ZoneInfo("UTC"))
    assert counted(hub, "skipped", "superseded") == 59


async def test_a_reminder_lists_its_latest_notifications_and_counts_them_all(
    storage: Storage, database_url: str
) -> None:
    utc = ZoneInfo("UTC")
    raw = {"reminders": [reminder(name="often", cron="* * * * *", timezone="UTC")]}
    start = at("2026-05-04T08:00:30", utc)
    hub = make_hub(storage, database_url, raw, start)
    await sync_config_reminders(hub, hub.config["reminders"])
    fired = await run_clock(hub, start + 25 * 60, 60)
    assert len(fired) == 25
    row = await storage.schedules.get_by_name("config:often")
    assert row is not None
    other = await one_shot(storage, start + 86400, "other")
    # Another schedule's campaign whose key shares the first digits is not counted.
    await storage.campaigns.create(
        provider="sandbox",
        template="t",
        audience={"to": ["1"]},
        source="api",
        idempotency_key=f"schedule:{row['id']}0:{int(start)}",
        now=start,
    )
    found = await storage.schedules.notifications([row["id"], other])
    ids = [campaign.id for campaign in await campaign_rows(storage) if campaign.source == "reminder:config:often"]
    assert found[row["id"]].count == 25
    assert found[row["id"]].latest == ids[::-1][:20]
    assert (found[other].count, found[other].latest) == (0, [])


async def test_a_firing_counts_its_recipients(storage: Storage, database_url: str) -> None:
    await add_contact(storage, "15551230001", ["vip"], None)
    await add_contact(storage, "15551230002", ["vip", "new"], "Europe/Lisbon")
    await add_contact(storage, "15551230003", ["vip"], "Asia/Kolkata")
    await add_contact(storage, "15551230004", ["new"], "Europe/Lisbon")
    configured = [
        reminder(name="vips", cron="0 9 * * *", to={"tags": ["vip"]}),
        reminder(name="listed", cron="0 9 * * *", timezone="Europe/Lisbon", to=["1", "2", "3"]),
    ]
    raw = {"wahub": {"timezone": "Europe/Lisbon"}, "reminders": configured}
    hub = make_hub(storage, database_url, raw, at("2026-05-04T08:00"))
    await sync_config_reminders(hub, hub.config["reminders"])
    await run_clock(hub, at("2026-05-05T08:00"), 30 * 60)
    recipients = {campaign.source: campaign.recipients for campaign in await campaign_rows(storage)}
    assert recipients == {
        "reminder:config:vips@Europe/Lisbon": 2,  # one without a zone counts in wahub.timezone
        "reminder:config:vips@Asia/Kolkata": 1,
        "reminder:config:listed": 3,
    }


async def test_the_unfinished_notifications_of_a_schedule(storage: Storage, database_url: str) -> None:
    fire_at = at("2026-05-04T09:00")
    schedule_id = await one_shot(storage, fire_at, "k")
    hub = make_hub(storage, database_url, {}, fire_at)
    [firing] = await fire_due(hub)
    assert firing.campaign_id is not None
    assert await storage.schedules.unfinished_notifications(schedule_id) == [firing.campaign_id]
    assert await storage.campaigns.cancel(firing.campaign_id, now=fire_at)
    assert await storage.schedules.unfinished_notifications(schedule_id) == []
