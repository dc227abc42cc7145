"""The acceptance points of notifications, reminders and templates, end to end
across their parts, on SQLite and PostgreSQL unless a point needs several
daemons (PostgreSQL only).

Each point and the tests that prove it (here unless a module is named):

1. A notification to 1,000 contacts, 30 of them opted out, refuses 30 in the dry
   run and in the real run, and survives ``kill -9`` after about 400 sends: all
   970 sent. The bound on duplicates: at most the sends in flight at the kill,
   those the provider had taken that the database had not recorded (a provider
   without idempotency cannot tell their retry from a new message).
   ``test_notification_processes.py`` proves it for a ``to`` list on SQLite
   (its dry run: ``tests/core/test_notifications_api.py``);
   ``test_a_segment_of_imported_contacts_survives_kill_9`` proves it for a
   segment by tag of imported contacts, on both databases.
2. Cancelling after 100 sends stops the rest, and counts by status are right
   throughout: while the batches are written, after sends and after delivery,
   read and failure statuses, then at the cancel with sends in flight and after
   those finish: ``tests/core/test_campaign_writer.py``
   (``test_counts_are_right_while_writing_after_sends_and_after_statuses``,
   ``test_cancel_stops_the_writing_and_fails_what_no_dispatcher_holds``); the
   final counts over HTTP: ``tests/core/test_notifications_api.py``.
3. A weekly reminder in Europe/Lisbon fires once at 09:00 local on the Mondays
   around both daylight-saving changes, and missed firings go late inside the
   grace and are skipped past it, through ``fire_due`` on a hub:
   ``tests/core/test_reminders.py``
   (``test_weekly_reminder_fires_at_nine_local_on_the_mondays_around_both_changes``,
   ``test_a_firing_missed_while_down_goes_late_inside_the_grace_and_is_skipped_past_it``,
   ``test_days_missed_are_skipped_and_today_goes_late``); the late firing sent
   and the skipped one never sent, on a running daemon:
   ``test_a_firing_missed_while_down_is_sent_late_inside_the_grace_and_never_past_it``.
   Three ``wahub run`` processes on one PostgreSQL fire a reminder once, one
   message per recipient: ``test_three_daemons_fire_a_reminder_once``.
4. An appointment reminder 24 h before its event goes out at the right instant
   and waits out the quiet hours of the contact's own zone:
   ``test_an_appointment_reminder_fires_on_time_and_waits_out_the_contacts_quiet_hours``.
5. Missing template parameters are refused before any provider call, through
   notifications and messages:
   ``test_missing_template_parameters_are_refused_before_any_provider_call``
   (the rules themselves: ``tests/core/test_template_params.py``). Each contact
   of a notification without ``language`` gets its approved language:
   ``test_a_notification_without_a_language_sends_each_contact_its_own``
   (the chain itself: ``tests/core/test_template_language.py``).
6. ``wahub templates plan`` shows one create and one edit, ``apply`` empties the
   plan: ``tests/test_templates_cli.py``
   (``test_plan_shows_one_create_and_one_edit_and_apply_empties_it``).
7. Bulk sends never hold a reply back by more than the pacing window:
   ``tests/core/test_bulk_sends.py``
   (``test_a_reply_goes_ahead_of_hundreds_of_queued_bulk_sends``) for rows
   queued directly; ``test_a_bot_reply_overtakes_a_running_notification``
   through the campaign writer, the router and the dispatcher.
8. No 5xx under schemathesis and a valid OpenAPI 3.1 document:
   ``tests/e2e/test_openapi_live.py``
   (``test_every_operation_answers_as_the_document_says``),
   ``tests/core/test_openapi.py`` (``test_the_served_document_is_valid_openapi_3_1``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from tests.core.test_bulk_sends import position_of
from tests.core.test_engine import USER, Engine, engine_for
from tests.core.test_engine_policy import RULES
from tests.core.test_notifications_api import finished
from tests.core.test_reminders_api import iso
from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.e2e.test_engine_processes import PLUGIN, _pg_count, in_flight, write_config
from tests.helpers import AUTH
from wahub.core.outbound.dispatcher import DISPATCHER_STATE, Dispatcher
from wahub.core.outbound.reminders import fire_due
from wahub.core.storage.policy import Template
from wahub.core.storage.schema import messages
from wahub.testing import ManualClock, wait_until
from wahub.testing.fake_provider import FakeProviderServer

DAY = 86400.0
HOUR = 3600.0
SAO_PAULO = dt.timezone(dt.timedelta(hours=-3), "America/Sao_Paulo")

# 1,000 Portuguese mobile numbers tagged for the newsletter, and 50 staff who are not.
SUBSCRIBERS = [f"351912{n:06d}" for n in range(1000)]
STAFF = [f"351913{n:06d}" for n in range(50)]
OPTED_OUT = SUBSCRIBERS[7::33][:30]

ORDER_UPDATE = [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} has shipped."}]


def written(address: str) -> str:
    """``351912000007`` as people write it: ``+351 912 000 007``."""
    return f"+{address[:3]} {address[3:6]} {address[6:9]} {address[9:]}"


async def api(http: aiohttp.ClientSession, base: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    async with http.request(method, f"{base}/api/v1{path}", headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def import_csv(http: aiohttp.ClientSession, base: str, csv: str) -> dict[str, Any]:
    status, answer = await api(
        http, base, "POST", "/contacts/import", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert status == 200, answer
    assert answer["rejected"] == [], answer
    result: dict[str, Any] = answer
    return result


async def notification_when(http: aiohttp.ClientSession, base: str, notification_id: int, done: Any) -> Any:
    async def reached() -> Any:
        _, found = await api(http, base, "GET", f"/notifications/{notification_id}")
        return found if done(found) else None

    return await wait_until(reached, within=120)


async def database_count(url: str, query: str) -> int:
    """A count read straight from the daemon's database, SQLite file or PostgreSQL."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(query).fetchone()[0])
    return await _pg_count(url, query)


# -- 1. a segment of imported contacts across kill -9 ---------------------------------------


async def test_a_segment_of_imported_contacts_survives_kill_9(tmp_path: Path, database_url: str) -> None:
    # Slow answers keep many sends in flight, so the kill lands in the middle of them.
    server = await FakeProviderServer(latency=0.3, statuses=False).start()
    config = write_config(tmp_path / "config.yaml", database_url, server)
    port = free_port()
    daemon = start_daemon(config, tmp_path, port, plugins=PLUGIN)
    restarted: Daemon | None = None
    try:
        daemon.wait_healthy(within=20)
        async with aiohttp.ClientSession() as http:
            rows = [f"{written(a)},newsletter;pt" for a in SUBSCRIBERS] + [f"{written(a)},staff" for a in STAFF]
            imported = await import_csv(http, daemon.url, "phone,tags\n" + "\n".join(rows) + "\n")
            assert (imported["received"], imported["created"]) == (1050, 1050)
            for address in OPTED_OUT:
                body = {"action": "opt_out", "evidence": {"form": "unsubscribe page"}}
                status, _ = await api(http, daemon.url, "POST", f"/contacts/fake/{address}/consent", json=body)
                assert status == 200

            body = {
                "template": "order_update",
                "language": "en",
                "segment": {"tags": ["newsletter"]},
                "parameters": {"1": "Ana"},
            }
            status, preview = await api(http, daemon.url, "POST", "/notifications", json={**body, "dry_run": True})
            assert status == 200, preview
            assert preview == {
                "id": None,
                "state": "expanding",
                "recipients": 1000,
                "refused": {"opted_out": 30},
                "preview": "exact",
            }
            status, created = await api(
                http, daemon.url, "POST", "/notifications", json=body, headers={"Idempotency-Key": "newsletter-1"}
            )
            assert status == 202, created
            assert (created["recipients"], created["refused"]) == (1000, {"opted_out": 30})

            async def about_400_sent() -> bool:
                return len(server.accepted()) >= 400

            await wait_until(about_400_sent, within=60)
            daemon.kill()
            recorded = await database_count(
                database_url, "SELECT count(*) FROM messages WHERE direction = 'out' AND status != 'queued'"
            )

            await server.drained()  # what it had on the wire at the kill counts as in flight
            open_at_kill = in_flight(server, recorded)
            assert recorded < 900, "the kill came after nearly every message was sent"

            restarted = start_daemon(config, tmp_path, port, plugins=PLUGIN)
            restarted.wait_healthy(within=20)
            found = await notification_when(http, restarted.url, created["id"], finished)
        assert (found["written"], found["refused"], found["counts"]["sent"]) == (970, {"opted_out": 30}, 970)
        calls = Counter(call.body["to"] for call in server.accepted())
        assert set(calls) == set(SUBSCRIBERS) - set(OPTED_OUT)
        doubled = sum(times - 1 for times in calls.values())
        print(f"kill -9 during a segment: {recorded} recorded, {open_at_kill} in flight, {doubled} duplicates")
        # The bound: only a send the provider had taken but the database had not recorded goes twice.
        assert doubled <= open_at_kill
        query = "SELECT count(DISTINCT address) FROM messages WHERE campaign_id IS NOT NULL"
        assert await database_count(database_url, query) == 970
    finally:
        if restarted is not None:
            restarted.terminate()
        if daemon.process.poll() is None:
            daemon.kill()
        await server.close()


# -- 3. three daemons fire a reminder once ------------------------------------------------


@pytest.mark.postgres
async def test_three_daemons_fire_a_reminder_once(tmp_path: Path, postgres_url: str) -> None:
    server = await FakeProviderServer(latency=0.05, statuses=False).start()
    config = write_config(tmp_path / "config.yaml", postgres_url, server)
    daemons = [start_daemon(config, tmp_path, free_port(), plugins=PLUGIN) for _ in range(3)]
    recipients = [f"1555700{n:04d}" for n in range(20)]
    try:
        for daemon in daemons:
            daemon.wait_healthy(within=20)
        async with aiohttp.ClientSession() as http:
            # A few seconds ahead: every daemon is up and racing for it when it comes due.
            fire_at = float(int(time.time()) + 8)
            body = {"to": recipients, "template": "order_update", "language": "en", "parameters": {"1": "Ana"}}
            status, created = await api(http, daemons[1].url, "POST", "/reminders", json={**body, "at": iso(fire_at)})
            assert status == 201, created

            async def fired() -> Any:
                _, shown = await api(http, daemons[2].url, "GET", f"/reminders/{created['id']}")
                return shown if shown["state"] == "done" else None

            shown = await wait_until(fired, within=30)
            assert (shown["fired"], shown["skipped"], len(shown["notifications"])) == (1, 0, 1)
            await notification_when(http, daemons[0].url, shown["notifications"][0], finished)
        assert await _pg_count(postgres_url, "SELECT count(*) FROM campaigns") == 1
        calls = Counter(call.body["to"] for call in server.accepted())
        assert calls == dict.fromkeys(recipients, 1)
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.terminate()
        await server.close()


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[Engine]:
    """A daemon whose clock stands still until the test moves it."""
    async for engine in engine_for(database_url, clock=ManualClock(time.time()), pair_limit=None):
        await engine.daemon.hub.storage.policy.upsert_template(
            "fake", Template("order_update", "en", "UTILITY", "APPROVED")
        )
        yield engine


async def reminder_at(engine: Engine, to: str, instant: float) -> dict[str, Any]:
    body = {"to": to, "template": "order_update", "language": "en", "parameters": {"1": "Ana"}, "at": iso(instant)}
    status, created = await api(engine.http, engine.daemon.url, "POST", "/reminders", json=body)
    assert status == 201, created
    result: dict[str, Any] = created
    return result


async def reminder_when(engine: Engine, reminder_id: int, state: str) -> dict[str, Any]:
    async def reached() -> Any:
        _, shown = await api(engine.http, engine.daemon.url, "GET", f"/reminders/{reminder_id}")
        return shown if shown["state"] == state else None

    result: dict[str, Any] = await wait_until(reached)
    return result


async def test_a_firing_missed_while_down_is_sent_late_inside_the_grace_and_never_past_it(clocked: Engine) -> None:
    engine, url = clocked, clocked.daemon.url
    clock = engine.daemon.hub.clock
    assert isinstance(clock, ManualClock)
    late, gone = "15557000001", "15557000002"
    due = round(clock.now + HOUR)
    first = await reminder_at(engine, late, due)

    # The daemon is down from before the firing until 30 minutes after it: inside the hour of grace.
    clock.set(due + 30 * 60)
    await fire_due(engine.daemon.hub)  # or the daemon's own job, whichever runs first
    shown = await reminder_when(engine, first["id"], "done")
    assert (shown["fired"], shown["skipped"], len(shown["notifications"])) == (1, 0, 1)
    await notification_when(engine.http, url, shown["notifications"][0], finished)
    assert [call.body["to"] for call in engine.server.accepted()] == [late]

    # Down two hours past the next one: skipped, and no notification is ever made for it.
    second = await reminder_at(engine, gone, clock.now + HOUR)
    clock.set(clock.now + 3 * HOUR)
    await fire_due(engine.daemon.hub)
    skipped = await reminder_when(engine, second["id"], "done")
    assert (skipped["fired"], skipped["skipped"], skipped["notifications"]) == (0, 1, [])
    assert [call.body["to"] for call in engine.server.calls] == [late]
    metrics = await (await engine.http.get(f"{url}/metrics")).text()
    assert 'wahub_reminder_firings_total{outcome="fired_late",reason=""} 1.0' in metrics
    assert 'wahub_reminder_firings_total{outcome="skipped",reason="misfire_grace_passed"} 1.0' in metrics


# -- 4. an appointment reminder through quiet hours -------------------------------------


@pytest.fixture
def fire_at() -> float:
    """When the appointment reminder comes due: two minutes from now, on a full minute."""
    return float((int(time.time()) // 60 + 2) * 60)


@pytest.fixture
async def quiet_engine(database_url: str, fire_at: float) -> AsyncIterator[Engine]:
    """A daemon on a clock a minute before ``fire_at`` whose quiet hours, read in the
    contact's zone (America/Sao_Paulo), began 30 minutes before it and end two hours
    after it. Read in UTC, the default zone, the same hours would be long over."""
    local = dt.datetime.fromtimestamp(fire_at, SAO_PAULO)
    quiet = {
        "start": (local - dt.timedelta(minutes=30)).strftime("%H:%M"),
        "end": (local + dt.timedelta(hours=2)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    config = {"policy": {"quiet_hours": quiet}, "router": RULES}
    async for engine in engine_for(database_url, config=config, clock=ManualClock(fire_at - 60), pair_limit=None):
        yield engine


async def test_an_appointment_reminder_fires_on_time_and_waits_out_the_contacts_quiet_hours(
    quiet_engine: Engine, fire_at: float
) -> None:
    engine, quiet_end = quiet_engine, fire_at + 2 * HOUR
    hub, url = engine.daemon.hub, engine.daemon.url
    clock = hub.clock
    assert isinstance(clock, ManualClock)
    await hub.storage.policy.upsert_template("fake", Template("appointment", "en", "UTILITY", "APPROVED"))
    await import_csv(engine.http, url, "phone,timezone\n+55 11 91234-5678,America/Sao_Paulo\n")
    contact = "5511912345678"
    body = {
        "to": contact,
        "template": "appointment",
        "language": "en",
        "parameters": {"1": "Dr. Silva"},
        "before": {"event_at": iso(fire_at + DAY, SAO_PAULO), "offset": "24h"},
    }
    status, created = await api(engine.http, url, "POST", "/reminders", json=body)
    assert status == 201, created
    assert created["next_fire_at"] == fire_at

    clock.set(fire_at - 1)
    assert await fire_due(hub) == []
    clock.set(fire_at)
    await fire_due(hub)  # or the daemon's own job, whichever runs first

    async def fired() -> Any:
        _, shown = await api(engine.http, url, "GET", f"/reminders/{created['id']}")
        return shown["notifications"]

    [notification_id] = await wait_until(fired)
    await notification_when(engine.http, url, notification_id, lambda n: n["state"] == "queued")
    [row] = await campaign_messages(engine, notification_id)
    # A reminder to one person is personal: the conversations' lane, held by quiet hours all the same.
    assert (row["address"], row["lane"], row["status"]) == (contact, 0, "queued")
    assert row["next_attempt_at"] == quiet_end

    # A minute before the end, the contact writes: the bot's reply goes at once, the reminder waits.
    clock.set(quiet_end - 60)
    await engine.inbound("hi", sender=contact)

    async def replied() -> bool:
        return any(call.body["type"] == "text" for call in engine.server.accepted())

    await wait_until(replied)
    assert [call.body["type"] for call in engine.server.calls] == ["text"]
    assert (await engine.message(row["id"]))["status"] == "queued"

    clock.set(quiet_end)
    sent = await engine.status_becomes(row["id"], "delivered")
    assert sent["message"]["template"]["name"] == "appointment"
    assert [call.body["type"] for call in engine.server.calls] == ["text", "template"]


async def campaign_messages(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    async with engine.daemon.hub.storage.db.connect() as conn:
        query = sa.select(messages).where(messages.c.campaign_id == campaign_id).order_by(messages.c.id)
        return [dict(row._mapping) for row in (await conn.execute(query)).all()]


# -- 5. template parameters and languages -----------------------------------------------


@pytest.fixture
async def templated(database_url: str) -> AsyncIterator[Engine]:
    """A daemon whose ``order_update`` (two body parameters) is approved in pt_BR and en_US."""
    async for engine in engine_for(database_url, pair_limit=None):
        policy = engine.daemon.hub.storage.policy
        for language in ("pt_BR", "en_US"):
            template = Template("order_update", language, "UTILITY", "APPROVED")
            await policy.upsert_template("fake", template, components=ORDER_UPDATE)
        yield engine


async def test_missing_template_parameters_are_refused_before_any_provider_call(templated: Engine) -> None:
    url, http = templated.daemon.url, templated.http
    to = ["5511912345678", "351912345678"]
    notification = {"template": "order_update", "language": "pt_BR", "to": to, "parameters": {"1": "Ana"}}
    missing = "body parameter {{2}} is missing (the body has {{1}}, {{2}})"

    status, answer = await api(http, url, "POST", "/notifications", json=notification)
    assert status == 422 and answer["error"]["code"] == "invalid_message", answer
    assert missing in answer["error"]["message"]

    components = [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]
    single = {"name": "order_update", "language": {"code": "pt_BR"}, "components": components}
    status, answer = await templated.send({"to": to[0], "type": "template", "template": single})
    assert status == 422 and answer["error"]["code"] == "invalid_message", answer
    assert missing in answer["error"]["message"]

    assert templated.server.calls == []
    _, listed = await api(http, url, "GET", "/notifications")
    assert listed["notifications"] == []
    async with templated.daemon.hub.storage.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(messages)) == 0


async def test_a_notification_without_a_language_sends_each_contact_its_own(templated: Engine) -> None:
    url, http = templated.daemon.url, templated.http
    people = {"5511912345678": "pt-BR", "351912345678": "pt_PT", "447911123456": "en"}
    await import_csv(
        http,
        url,
        "phone,language,tags\n+55 11 91234-5678,pt-BR,shop\n+351 912 345 678,pt_PT,shop\n+44 7911 123456,en,shop\n",
    )
    body = {"template": "order_update", "segment": {"tags": ["shop"]}, "parameters": {"1": "Ana", "2": "A-17"}}

    status, created = await api(http, url, "POST", "/notifications", json=body)

    assert status == 202, created
    await notification_when(http, url, created["id"], finished)
    rows = await campaign_messages(templated, created["id"])
    chosen = {row["address"]: row["body"]["template"]["language"]["code"] for row in rows}
    # pt_PT is not approved: the Portuguese contact gets the other Portuguese.
    assert chosen == {"5511912345678": "pt_BR", "351912345678": "pt_BR", "447911123456": "en_US"}
    received = {call.body["to"]: call.body["template"]["language"]["code"] for call in templated.server.accepted()}
    assert received == chosen and set(received) == set(people)


# -- 7. a reply overtakes a running notification ------------------------------------------


@pytest.fixture
async def bot(database_url: str) -> AsyncIterator[Engine]:
    """A daemon answering ``hi`` by rule, on a number sending 20 messages per second."""
    async for engine in engine_for(database_url, config={"router": RULES}, pair_limit=None, messages_per_second=20):
        yield engine


async def test_a_bot_reply_overtakes_a_running_notification(bot: Engine) -> None:
    engine = bot
    url, http = engine.daemon.url, engine.http
    await engine.daemon.hub.storage.policy.upsert_template(
        "fake", Template("order_update", "en", "UTILITY", "APPROVED")
    )
    dispatcher: Dispatcher = engine.daemon.hub.state[DISPATCHER_STATE]
    window = dispatcher.pacers["fake"].bulk_window()
    audience = [f"1555800{n:04d}" for n in range(300)]
    body = {"template": "order_update", "language": "en", "to": audience, "parameters": {"1": "Ana"}}
    status, created = await api(http, url, "POST", "/notifications", json=body)
    assert status == 202, created

    async def bulk_flowing() -> bool:
        return len(engine.server.calls) >= 40

    await wait_until(bulk_flowing)
    await engine.inbound("hi")
    position = await position_of(engine, USER)
    history = await engine.daemon.hub.storage.messages.history("fake", USER)
    [reply] = [row for row in history if row["direction"] == "out"]
    # Bulk calls the provider received after the reply was queued and before the reply:
    # at most the bulk rows the number keeps at hand (one second of its bulk rate) plus
    # the one send a pacing interval lets through.
    overtaking = [call for call in engine.server.calls[: position - 1] if call.received_at >= reply["created_at"]]
    print(f"a reply behind a notification: {len(overtaking)} bulk sends overtook it, window {window}")
    assert len(overtaking) <= window + 1, (len(overtaking), window)
    assert position < len(audience) - window
    status, _ = await api(http, url, "POST", f"/notifications/{created['id']}/cancel")
    assert status == 200
