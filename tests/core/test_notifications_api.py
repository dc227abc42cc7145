"""``/api/v1/notifications`` end to end over real HTTP, on SQLite and PostgreSQL:
a daemon sending through a fake provider cloud, the policy's refusals
counted the same in the preview and in the sending, dry runs, idempotency,
segments, cancelling and the metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.core.test_engine import Engine, engine_for
from tests.helpers import AUTH
from wahub.core.http.notifications import PREVIEW_LIMIT
from wahub.core.storage.policy import Template
from wahub.core.storage.schema import contact_identities, contacts, messages
from wahub.testing import wait_until

USERS = [f"1555300{n:04d}" for n in range(1000)]
TEMPLATE = Template("order_update", "en", "UTILITY", "APPROVED")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    async for engine in engine_for(database_url, messages_per_second=None, pair_limit=None):
        await engine.daemon.hub.storage.policy.upsert_template("fake", TEMPLATE)
        yield engine


async def call(engine: Engine, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    async with engine.http.request(method, f"{engine.daemon.url}{path}", json=body, headers=headers) as response:
        return response.status, await response.json()


async def notify(engine: Engine, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    return await call(engine, "POST", "/api/v1/notifications", {"template": "order_update", **body}, key)


async def opt_out_through_the_api(engine: Engine, addresses: list[str]) -> None:
    for address in addresses:
        status, _ = await call(
            engine,
            "POST",
            f"/api/v1/contacts/fake/{address}/consent",
            {"action": "opt_out", "evidence": {"form": "unsubscribe page"}},
        )
        assert status == 200


async def stored_counts(engine: Engine) -> tuple[int, int]:
    async with engine.daemon.hub.storage.db.connect() as conn:
        written = await conn.scalar(sa.select(sa.func.count()).select_from(messages))
    listed = (await call(engine, "GET", "/api/v1/notifications"))[1]["notifications"]
    return int(written or 0), len(listed)


def finished(notification: dict[str, Any]) -> bool:
    """Written out, and nothing of it queued any more."""
    return bool(notification["state"] == "queued" and notification["counts"]["queued"] == 0)


async def notification_when(engine: Engine, notification_id: int, done: Any) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        _, found = await call(engine, "GET", f"/api/v1/notifications/{notification_id}")
        return found if done(found) else None

    result: dict[str, Any] = await wait_until(reached, within=60)
    return result


async def test_the_preview_and_the_sending_agree_on_refusals(engine: Engine) -> None:
    opted_out = USERS[500:530]
    await opt_out_through_the_api(engine, opted_out)
    body = {"language": "en", "to": USERS, "parameters": {"1": "Ana"}}

    status, preview = await notify(engine, {**body, "dry_run": True})

    assert status == 200
    assert preview == {
        "id": None,
        "state": "expanding",
        "recipients": 1000,
        "refused": {"opted_out": 30},
        "preview": "exact",
    }
    assert await stored_counts(engine) == (0, 0)

    status, created = await notify(engine, body, key="spring-sale")

    assert status == 202
    assert created["recipients"] == 1000 and created["refused"] == {"opted_out": 30}
    assert created["preview"] == "exact"
    found = await notification_when(engine, created["id"], finished)
    assert found["state"] == "queued" and found["written"] == 970 and found["refused"] == {"opted_out": 30}
    assert found["counts"]["failed"] == {} and found["counts"]["cancelled"] == 0
    assert found["counts"]["sent"] + found["counts"]["delivered"] + found["counts"]["read"] == 970
    sent_to = [call.body["to"] for call in engine.server.accepted()]
    assert len(sent_to) == 970 and set(sent_to) == set(USERS) - set(opted_out)

    metrics = await (await engine.http.get(f"{engine.daemon.url}/metrics")).text()
    assert (
        'wahub_notification_recipients_total{outcome="refused",provider="fake",reason="opted_out",source="api"} 30.0'
        in metrics
    )
    assert 'wahub_notification_recipients_total{outcome="queued",provider="fake",reason="",source="api"} 970.0' in (
        metrics
    )
    # The gauge of the last day's notifications shows them all, by status.
    shown = {
        line.split("} ")[0] + "}": float(line.split("} ")[1])
        for line in metrics.splitlines()
        if line.startswith("wahub_notification_messages{")
    }
    assert sum(shown.values()) == 970
    assert shown['wahub_notification_messages{provider="fake",reason="",status="queued"}'] == 0


async def test_an_idempotency_key_returns_the_first_notification(engine: Engine) -> None:
    body = {"language": "en", "to": USERS[:3], "parameters": {"1": "Ana"}}
    status, first = await notify(engine, body, key="k-1")
    assert status == 202

    status, again = await notify(engine, body, key="k-1")

    # A replay answers 200 with the stored notification, nothing checked again.
    assert status == 200 and again["id"] == first["id"] and again["recipients"] == 3
    assert again["preview"] == "stored"
    status, conflict = await notify(engine, {**body, "parameters": {"1": "Bruno"}}, key="k-1")
    assert status == 409 and conflict["error"]["code"] == "idempotency_conflict"
    await notification_when(engine, first["id"], lambda n: n["state"] == "queued")
    assert (await stored_counts(engine)) == (3, 1)


async def test_a_message_refused_for_everyone_is_a_422_and_creates_nothing(engine: Engine) -> None:
    paused = Template("winter_sale", "en", "MARKETING", "PAUSED")
    await engine.daemon.hub.storage.policy.upsert_template("fake", paused)

    status, answer = await call(
        engine, "POST", "/api/v1/notifications", {"template": "winter_sale", "language": "en", "to": USERS[:20]}
    )

    assert status == 422
    assert answer["error"]["code"] == "template_not_approved"
    assert "winter_sale" in answer["error"]["message"] and "PAUSED" in answer["error"]["message"]
    assert await stored_counts(engine) == (0, 0)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"to": USERS[:2], "segment": {"tags": ["vip"]}}, "$", "exactly one of to"),
        ({}, "$", "exactly one of to"),
        ({"to": USERS[:2], "per_recipient": {USERS[5]: {"1": "x"}}}, f"$.per_recipient.{USERS[5]}", "not one of"),
        ({"to": USERS[:2], "send_at": "2030-01-01T09:00:00"}, "$.send_at", "has no offset"),
        ({"to": USERS[:2], "send_at": "next tuesday"}, "$.send_at", "not an ISO 8601 time"),
        ({"segment": {"tags": ["vip"], "timezone": "Mars/Olympus"}}, "$.segment.timezone", "IANA"),
        ({"to": USERS[:2], "parameters": {"Bad-Name": "x"}}, "$.parameters", "does not match"),
        ({"to": []}, "$.to", "should be non-empty"),
        ({"to": USERS[:2], "parameters": {"buttons": {"x": "1"}}}, "$.parameters.buttons", "does not match"),
        ({"to": USERS[:2], "parameters": {"buttons": ["a"]}}, "$.parameters.buttons", "not of type 'object'"),
        ({"to": USERS[:2], "parameters": {"header": 5}}, "$.parameters.header", "is not valid"),
        ({"to": USERS[:2], "parameters": {"header": {}}}, "$.parameters.header", "should be non-empty"),
    ],
)
async def test_a_bad_request_names_the_field(engine: Engine, body: dict[str, Any], field: str, words: str) -> None:
    status, answer = await notify(engine, {"language": "en", **body})

    assert status == 422, answer
    assert answer["error"]["code"] == "invalid_notification"
    assert answer["error"]["field"] == field and words in answer["error"]["message"]


async def test_a_segment_is_the_contacts_with_every_tag_in_the_zone(engine: Engine) -> None:
    now = time.time()
    people = [
        ("15553990001", ["vip", "pt"], "Europe/Lisbon"),
        ("15553990002", ["pt", "vip", "new"], None),
        ("15553990003", ["vip"], "Europe/Lisbon"),
        ("15553990004", ["vip", "pt"], "America/New_York"),
    ]
    async with engine.daemon.hub.storage.db.begin() as conn:
        await conn.execute(
            contacts.insert(),
            [
                {"provider": "fake", "address": a, "tags": t, "timezone": z, "created_at": now, "updated_at": now}
                for a, t, z in people
            ],
        )

    async def recipients(segment: dict[str, Any]) -> int:
        status, answer = await notify(engine, {"language": "en", "segment": segment, "dry_run": True})
        assert status == 200, answer
        return int(answer["recipients"])

    assert await recipients({"tags": ["vip", "pt"]}) == 3
    assert await recipients({"tags": ["vip"]}) == 4
    assert await recipients({"tags": ["vip", "pt"], "timezone": "Europe/Lisbon"}) == 1
    # Contacts without a zone count as wahub.timezone's (UTC by default).
    assert await recipients({"tags": ["vip", "pt"], "timezone": "UTC"}) == 1
    assert await recipients({"tags": ["nobody"]}) == 0

    status, created = await notify(engine, {"language": "en", "segment": {"tags": ["vip", "pt"]}})
    assert status == 202
    await notification_when(engine, created["id"], finished)
    assert {call.body["to"] for call in engine.server.accepted()} == {"15553990001", "15553990002", "15553990004"}


async def test_a_scheduled_notification_can_be_cancelled_before_it_goes(engine: Engine) -> None:
    body = {"language": "en", "to": USERS[:10], "send_at": "2099-01-01T09:00:00+01:00"}
    status, created = await notify(engine, body)
    assert status == 202 and created["state"] == "scheduled"

    status, cancelled = await call(engine, "POST", f"/api/v1/notifications/{created['id']}/cancel")

    assert status == 200
    assert cancelled["state"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["written"] == 0 and cancelled["send_at"] == 4070937600.0
    status, missing = await call(engine, "POST", "/api/v1/notifications/999999/cancel")
    assert status == 404 and missing["error"]["code"] == "not_found"


async def test_notifications_are_listed_newest_first_in_pages(engine: Engine) -> None:
    ids = []
    for n in range(3):
        status, created = await notify(
            engine, {"language": "en", "to": USERS[n : n + 1], "send_at": "2099-01-01T00:00:00Z"}
        )
        assert status == 202
        ids.append(created["id"])

    status, page = await call(engine, "GET", "/api/v1/notifications?limit=2")
    assert status == 200
    assert [item["id"] for item in page["notifications"]] == [ids[2], ids[1]] and page["next"] == ids[1]
    _, rest = await call(engine, "GET", f"/api/v1/notifications?limit=2&after={page['next']}")
    assert [item["id"] for item in rest["notifications"]] == [ids[0]] and rest["next"] is None
    status, wrong = await call(engine, "GET", "/api/v1/notifications?limt=2")
    assert status == 400 and wrong["error"]["parameter"] == "limt"


async def add_contact(engine: Engine, address: str, identities: list[tuple[str, str]]) -> int:
    now = time.time()
    async with engine.daemon.hub.storage.db.begin() as conn:
        contact_id = (
            await conn.execute(
                contacts.insert()
                .values(provider="fake", address=address, tags=["vip"], created_at=now, updated_at=now)
                .returning(contacts.c.id)
            )
        ).scalar_one()
        await conn.execute(
            contact_identities.insert(),
            [{"contact_id": contact_id, "kind": k, "value": v, "created_at": now} for k, v in identities],
        )
    return int(contact_id)


async def test_every_spelling_of_one_person_is_one_recipient_and_one_message(engine: Engine) -> None:
    # A contact now addressed by its BSUID, still known by its wa_id; and an unknown number written two ways.
    await add_contact(engine, "US.13491208655302741918", [("wa_id", "15553770001")])
    spellings = ["+15553770001", "15553770001", "US.13491208655302741918", "+15553770002", "15553770002"]
    body = {
        "language": "en",
        "to": spellings,
        "parameters": {"1": "friend"},
        "per_recipient": {"15553770002": {"1": "Bruno"}},
    }

    status, preview = await notify(engine, {**body, "dry_run": True})
    assert status == 200 and preview["recipients"] == 2 and preview["refused"] == {}
    await opt_out_through_the_api(engine, ["15553770001"])

    status, created = await notify(engine, body)

    assert status == 202 and created["recipients"] == 2 and created["refused"] == {"opted_out": 1}
    found = await notification_when(engine, created["id"], finished)
    assert found["written"] == 1 and found["refused"] == {"opted_out": 1}
    [sent] = engine.server.accepted()
    assert sent.body["to"] == "+15553770002"
    assert sent.body["template"]["components"][0]["parameters"][0]["text"] == "Bruno"
    async with engine.daemon.hub.storage.db.connect() as conn:
        keys = (await conn.execute(sa.select(messages.c.idempotency_key))).scalars().all()
    assert keys == [f"campaign:{created['id']}:15553770002"]


async def test_a_large_audience_is_answered_at_once_and_counted_as_written(engine: Engine) -> None:
    audience = [f"1555380{n:04d}" for n in range(PREVIEW_LIMIT + 1)]
    await opt_out_through_the_api(engine, audience[:2])
    body = {"language": "en", "to": audience, "send_at": "2099-01-01T00:00:00Z"}

    status, created = await notify(engine, body, key="big-one")

    assert status == 202
    assert created["recipients"] == PREVIEW_LIMIT + 1
    assert created["refused"] is None and created["preview"] == "deferred"
    status, dry = await notify(engine, {**body, "dry_run": True})
    assert status == 200 and dry["refused"] == {"opted_out": 2} and dry["preview"] == "exact"
    status, again = await notify(engine, body, key="big-one")
    assert status == 200 and again["id"] == created["id"] and again["preview"] == "stored"
    assert again["recipients"] == PREVIEW_LIMIT + 1 and again["refused"] == {}
