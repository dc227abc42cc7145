"""The campaign writer on SQLite and PostgreSQL, batch by batch: what each
batch writes, a writer stopped between batches and resumed by another,
counts by status while writing and as messages are sent, and cancelling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from wahub.core.errors import InvalidMessage
from wahub.core.http.notifications import counted
from wahub.core.hub import Hub
from wahub.core.models import StatusEvent
from wahub.core.outbound.campaigns import BATCH, PERSONAL_AT_MOST, CampaignWriter, template_components
from wahub.core.runtime.app import command_hub
from wahub.core.storage.campaigns import CANCELLED, QUEUED, WRITE_FAILED, Campaign, TemplateLayout
from wahub.core.storage.policy import Template
from wahub.core.storage.schema import campaigns, contact_identities, contacts, messages
from wahub.testing import build_config, plugin_manager
from wahub.testing import fake_provider as fake_plugin

USERS = [f"1555200{n:04d}" for n in range(1000)]
PROVIDER = {
    "platform": "fake",
    "name": "fake",
    "api_base": "http://127.0.0.1:9",
    "access_token": "token",
    "secret": "a-secret-of-16-characters",
}


@asynccontextmanager
async def writer_hub(database_url: str) -> AsyncIterator[Hub]:
    """A hub with storage, policy and the fake provider (nothing started, nothing sent)."""
    pm = plugin_manager([fake_plugin])
    config = build_config({"providers": [PROVIDER]}, database=database_url, pm=pm)
    async with command_hub(config, pm) as hub:
        await hub.storage.policy.upsert_template("fake", Template("order_update", "en", "UTILITY", "APPROVED"))
        yield hub


async def opt_out(hub: Hub, addresses: list[str]) -> None:
    for address in addresses:
        await hub.storage.policy.record_consent(
            "fake",
            address,
            action="opt_out",
            scope="all",
            source="api",
            evidence={"form": "test"},
            occurred_at=time.time(),
        )


async def notification(hub: Hub, addresses: list[str], **fields: Any) -> int:
    campaign_id, created = await hub.storage.campaigns.create(
        provider="fake",
        template="order_update",
        language="en",
        audience={"to": addresses},
        parameters={"1": "Ana"},
        source="api",
        idempotency_key=f"test:{time.monotonic_ns()}",
        now=hub.clock.time(),
        recipients=len(addresses),
        **fields,
    )
    assert created
    return campaign_id


async def claimed(writer: CampaignWriter) -> Campaign:
    campaign = await writer.claim()
    assert campaign is not None
    return campaign


async def rows_of(hub: Hub, campaign_id: int) -> list[Any]:
    async with hub.storage.db.connect() as conn:
        query = sa.select(messages).where(messages.c.campaign_id == campaign_id).order_by(messages.c.id)
        return list((await conn.execute(query)).all())


async def counts(hub: Hub, campaign_id: int) -> tuple[int, dict[str, Any]]:
    return counted(await hub.storage.campaigns.message_counts(campaign_id))


async def lease_runs_out(hub: Hub, campaign_id: int) -> None:
    """The lease of a writer that died ends (as it would after ``LEASE_SECONDS``)."""
    async with hub.storage.db.begin() as conn:
        await conn.execute(campaigns.update().where(campaigns.c.id == campaign_id).values(lease_until=0.0))


async def send(hub: Hub, count: int) -> list[int]:
    """The dispatcher's part: claim ``count`` queued messages and record them sent."""
    rows = await hub.storage.outbox.claim_outbox(count, 30.0, ["fake"])
    await hub.storage.outbox.mark_sent([(row.id, "fake", f"wamid.{row.id}") for row in rows])
    return [row.id for row in rows]


async def status(hub: Hub, message_id: int, state: str, code: str | None = None) -> None:
    event = StatusEvent("fake", f"st.{message_id}.{state}", f"wamid.{message_id}", state, time.time(), error_code=code)
    await hub.storage.messages.apply_status(event)


def test_parameters_become_the_templates_components() -> None:
    parameters = {
        "2": "12:30",
        "1": "Ana",
        "order_id": "A-17",
        "header": {"image": {"link": "https://example.com/a.png"}},
        "buttons": {"1": "track/A-17", "0": "yes"},
    }

    components = template_components(parameters, TemplateLayout({"0": "quick_reply", "1": "url"}))

    assert components == [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/a.png"}}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Ana"},
                {"type": "text", "text": "12:30"},
                {"type": "text", "parameter_name": "order_id", "text": "A-17"},
            ],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "yes"}],
        },
        {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "track/A-17"}]},
    ]
    assert template_components({"header": "Hello"}, TemplateLayout()) == [
        {"type": "header", "parameters": [{"type": "text", "text": "Hello"}]}
    ]
    # A template whose parameters are named names its header's too.
    assert template_components({"header": "42", "name": "Ana"}, TemplateLayout(header_name="order_id")) == [
        {"type": "header", "parameters": [{"type": "text", "parameter_name": "order_id", "text": "42"}]},
        {"type": "body", "parameters": [{"type": "text", "parameter_name": "name", "text": "Ana"}]},
    ]


async def test_a_notification_to_a_few_listed_people_is_personal_not_bulk(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        personal = await notification(hub, USERS[:PERSONAL_AT_MOST])
        broadcast = await notification(hub, USERS[: PERSONAL_AT_MOST + 1])
        writer = CampaignWriter(hub)
        while (campaign := await writer.claim()) is not None:
            await writer.write(campaign)

        assert {row.lane for row in await rows_of(hub, personal)} == {0}
        assert {row.lane for row in await rows_of(hub, broadcast)} == {1}


async def test_each_batch_writes_bulk_messages_and_skips_the_refused(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        await opt_out(hub, USERS[:3])
        campaign_id = await notification(hub, USERS[: BATCH + 10], per_recipient={USERS[5]: {"1": "Bruno"}})
        writer = CampaignWriter(hub)

        campaign = await writer.step(await claimed(writer))

        assert campaign is not None and campaign.position == BATCH
        rows = await rows_of(hub, campaign_id)
        assert len(rows) == BATCH - 3
        first = rows[0]
        assert (first.address, first.lane, first.origin, first.status) == (USERS[3], 1, "business", "queued")
        assert first.idempotency_key == f"campaign:{campaign_id}:{USERS[3]}"
        assert first.body["template"] == {
            "name": "order_update",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
        }
        bruno = next(row for row in rows if row.address == USERS[5])
        assert bruno.body["template"]["components"][0]["parameters"][0]["text"] == "Bruno"
        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.refused == {"opted_out": 3} and stored.state == "expanding"

        assert await writer.step(campaign) is None

        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == QUEUED and stored.expanded_at is not None
        assert len(await rows_of(hub, campaign_id)) == BATCH + 7


async def test_a_writer_stopped_between_batches_is_resumed_by_another_without_duplicates(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        await opt_out(hub, USERS[100:130])
        campaign_id = await notification(hub, USERS)
        first = CampaignWriter(hub)
        campaign = await first.step(await first.step(await claimed(first)) or await claimed(first))
        assert campaign is not None and campaign.position == 2 * BATCH
        # The first writer stops here (killed); its lease runs out and another takes over.
        await lease_runs_out(hub, campaign_id)
        second = CampaignWriter(hub)
        resumed = await claimed(second)
        assert resumed.position == 2 * BATCH

        await second.write(resumed)
        # The first writer, late, may write nothing more.
        assert await first.step(campaign) is None

        rows = await rows_of(hub, campaign_id)
        addresses = [row.address for row in rows]
        assert len(addresses) == len(set(addresses)) == 970
        assert set(addresses) == set(USERS) - set(USERS[100:130])
        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == QUEUED and stored.refused == {"opted_out": 30}
        assert await second.claim() is None


async def test_counts_are_right_while_writing_after_sends_and_after_statuses(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        campaign_id = await notification(hub, USERS[:500])
        writer = CampaignWriter(hub)
        campaign = await writer.step(await claimed(writer))

        assert await counts(hub, campaign_id) == (
            BATCH,
            {"queued": BATCH, "sent": 0, "delivered": 0, "read": 0, "failed": {}, "cancelled": 0},
        )
        sent = await send(hub, 50)
        for message_id in sent[:20]:
            await status(hub, message_id, "delivered")
        for message_id in sent[:5]:
            await status(hub, message_id, "read")
        for message_id in sent[40:43]:
            await status(hub, message_id, "failed", "131026")

        assert await counts(hub, campaign_id) == (
            BATCH,
            {"queued": BATCH - 50, "sent": 27, "delivered": 15, "read": 5, "failed": {"131026": 3}, "cancelled": 0},
        )
        assert await hub.storage.campaigns.recent_messages(0.0) == {
            ("fake", "queued", ""): 150,
            ("fake", "sent", ""): 27,
            ("fake", "delivered", ""): 15,
            ("fake", "read", ""): 5,
            ("fake", "failed", "131026"): 3,
        }
        assert campaign is not None
        await writer.write(campaign)
        written, now = await counts(hub, campaign_id)
        assert written == 500 and now["queued"] == 450


async def test_cancel_stops_the_writing_and_fails_what_no_dispatcher_holds(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        campaign_id = await notification(hub, USERS)
        writer = CampaignWriter(hub)
        campaign = await writer.step(await claimed(writer))
        await send(hub, 100)
        in_flight = await hub.storage.outbox.claim_outbox(10, 30.0, ["fake"])

        assert await hub.storage.campaigns.cancel(campaign_id, now=hub.clock.time())

        assert campaign is not None
        assert await writer.step(campaign) is None
        assert await writer.claim() is None
        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == CANCELLED and stored.cancelled_at is not None
        assert await counts(hub, campaign_id) == (
            BATCH,
            {"queued": 10, "sent": 100, "delivered": 0, "read": 0, "failed": {}, "cancelled": BATCH - 110},
        )
        # The sends in flight at the cancel finish as they would have.
        await hub.storage.outbox.mark_sent([(row.id, "fake", f"wamid.{row.id}") for row in in_flight])
        _written, after = await counts(hub, campaign_id)
        assert (after["queued"], after["sent"]) == (0, 110)
        assert not await hub.storage.campaigns.cancel(10**9, now=hub.clock.time())


async def test_a_scheduled_notification_is_written_once_its_time_comes(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        send_at = hub.clock.time() + 3600
        campaign_id = await notification(hub, USERS[:5], send_at=send_at)
        writer = CampaignWriter(hub)
        assert await writer.claim() is None

        hub.clock.time = lambda: send_at + 1  # type: ignore[method-assign]
        await writer.write(await claimed(writer))

        rows = await rows_of(hub, campaign_id)
        assert len(rows) == 5 and all(row.next_attempt_at >= send_at for row in rows)


async def test_a_free_text_campaign_is_refused_where_the_window_is_closed(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        campaign_id, _ = await hub.storage.campaigns.create(
            provider="fake",
            template=None,
            message={"type": "text", "text": {"body": "The shop opens at 10 today"}},
            audience={"to": USERS[:4]},
            source="reminder:opening",
            idempotency_key="schedule:1:1764547200",
            now=hub.clock.time(),
            recipients=4,
        )
        writer = CampaignWriter(hub)

        await writer.write(await claimed(writer))

        assert await rows_of(hub, campaign_id) == []
        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == QUEUED and stored.refused == {"window_closed": 4}


async def test_two_replicas_never_write_the_same_campaign_at_once(postgres_url: str) -> None:
    async with writer_hub(postgres_url) as one, writer_hub(postgres_url) as other:
        campaign_id = await notification(one, USERS[:300])
        first, second = CampaignWriter(one), CampaignWriter(other)

        taken = await claimed(first)
        assert await second.claim() is None

        await first.write(taken)
        assert await second.claim() is None
        addresses = [row.address for row in await rows_of(other, campaign_id)]
        assert len(addresses) == len(set(addresses)) == 300


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"buttons": {"x": "1"}}, "parameters.buttons.x"),
        ({"buttons": ["a"]}, "parameters.buttons"),
        ({"header": 5}, "parameters.header"),
        ({"header": {}}, "parameters.header"),
        ({"header": {"image": "a.png"}}, "parameters.header.image"),
        ({"1": {"nested": "x"}}, "parameters.1"),
        ({"buttons": {"0": ""}}, "parameters.buttons.0"),
    ],
)
def test_malformed_parameters_are_an_invalid_message_naming_them(parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        template_components(parameters, TemplateLayout())

    assert refused.value.field == field


async def test_a_campaign_with_malformed_parameters_ends_with_them_refused(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        campaign_id = await notification(hub, USERS[:3], per_recipient={USERS[1]: {"header": {}}})
        writer = CampaignWriter(hub)

        await writer.write(await claimed(writer))

        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == QUEUED and stored.refused == {"invalid_message": 1}
        assert [row.address for row in await rows_of(hub, campaign_id)] == [USERS[0], USERS[2]]


async def test_a_campaign_that_cannot_be_written_is_given_up_not_retried(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        # Its provider was removed from the configuration since it was created.
        campaign_id, _ = await hub.storage.campaigns.create(
            provider="gone",
            template="order_update",
            audience={"to": USERS[:5]},
            source="api",
            idempotency_key="test:gone",
            now=hub.clock.time(),
            recipients=5,
        )
        writer = CampaignWriter(hub)

        await writer.write(await claimed(writer))

        stored = await hub.storage.campaigns.get(campaign_id)
        assert stored is not None and stored.state == QUEUED and stored.expanded_at is not None
        assert stored.refused == {WRITE_FAILED: 5}
        assert await writer.claim() is None


async def test_one_contact_written_several_ways_gets_one_message(database_url: str) -> None:
    async with writer_hub(database_url) as hub:
        now = time.time()
        async with hub.storage.db.begin() as conn:
            contact_id = (
                await conn.execute(
                    contacts.insert()
                    .values(provider="fake", address="US.5550001", created_at=now, updated_at=now)
                    .returning(contacts.c.id)
                )
            ).scalar_one()
            await conn.execute(
                contact_identities.insert().values(
                    contact_id=contact_id, kind="wa_id", value="15552999999", created_at=now
                )
            )
        # A reminder's list is not cleaned by the API: the writer counts people itself.
        campaign_id = await notification(hub, ["+15552999999", "15552999999", "US.5550001", USERS[0]])
        writer = CampaignWriter(hub)

        await writer.write(await claimed(writer))

        rows = await rows_of(hub, campaign_id)
        assert [(row.address, row.idempotency_key) for row in rows] == [
            ("+15552999999", f"campaign:{campaign_id}:c{contact_id}"),
            (USERS[0], f"campaign:{campaign_id}:{USERS[0]}"),
        ]
