"""The activity feed, on a real SQLite file and a real PostgreSQL: every change
the inbox shows live writes exactly one row in its own transaction, a repeated
change writes none, and readers follow the feed by id."""

from __future__ import annotations

import time

import sqlalchemy as sa

from wahub.core.models import EchoMessage, InboundMessage, OutgoingMessage, StatusEvent
from wahub.core.storage.conversations import Transition
from wahub.core.storage.schema import conversation_events, conversations
from wahub.core.storage.store import Storage
from wahub.plugins.housekeeping import purge_inbox
from wahub.testing import build_config, running_daemon

USER = "15551234567"


def inbound(external_id: str, text: str = "hi", sender: str = USER) -> InboundMessage:
    return InboundMessage("sandbox", external_id, sender, "text", {"text": {"body": text}}, time.time())


async def feed(storage: Storage, after: int = 0) -> list[tuple[int, str, int | None]]:
    return [(row.conversation_id, row.kind, row.ref_id) for row in await storage.activity.after(after)]


async def test_an_inbound_message_is_one_activity_and_its_redelivery_none(storage: Storage) -> None:
    first = await storage.messages.record_inbound(inbound("m1"))
    again = await storage.messages.record_inbound(inbound("m1"))

    assert again == first
    assert await feed(storage) == [(first.conversation_id, "message", first.message_id)]


async def test_an_echo_is_a_message_activity_once(storage: Storage) -> None:
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    cursor = await storage.activity.last_id()
    echo = EchoMessage("sandbox", "e1", USER, "text", {"text": {"body": "from the app"}}, time.time())

    recorded = await storage.messages.record_echo(echo)
    await storage.messages.record_echo(echo)

    assert await feed(storage, cursor) == [(conversation_id, "message", recorded.message_id)]


async def test_a_queued_message_is_an_activity_once_and_only_in_a_conversation(storage: Storage) -> None:
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    cursor = await storage.activity.last_id()
    reply = OutgoingMessage.text(USER, "hello")

    message_id, created = await storage.messages.enqueue(
        "sandbox", reply, idempotency_key="k1", conversation_id=conversation_id
    )
    repeated = await storage.messages.enqueue("sandbox", reply, idempotency_key="k1", conversation_id=conversation_id)
    # A message sent outside any conversation (the API to a new number) is not the inbox's.
    await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555000", "x"), idempotency_key="k2")

    assert created and repeated == (message_id, False)
    assert await feed(storage, cursor) == [(conversation_id, "message", message_id)]


async def test_a_status_is_an_activity_only_when_it_moves_forward(storage: Storage) -> None:
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    message_id, _ = await storage.messages.enqueue(
        "sandbox", OutgoingMessage.text(USER, "hello"), idempotency_key="k1", conversation_id=conversation_id
    )
    await storage.outbox.mark_sent([(message_id, "sandbox", "p1")])
    cursor = await storage.activity.last_id()

    def status(external_id: str, name: str, at: float) -> StatusEvent:
        return StatusEvent("sandbox", external_id, "p1", name, at)

    assert await storage.messages.apply_status(status("s1", "read", 2.0)) is not None
    assert await storage.messages.apply_status(status("s2", "delivered", 1.0)) is None  # behind read
    assert await storage.messages.apply_status(status("s1", "read", 2.0)) is None  # the same again
    assert await feed(storage, cursor) == [(conversation_id, "status", message_id)]


async def test_the_outbox_records_sent_failed_and_rescheduled_messages(storage: Storage) -> None:
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    ids = [
        (
            await storage.messages.enqueue(
                "sandbox",
                OutgoingMessage.text(USER, f"part {n}"),
                idempotency_key=f"k{n}",
                conversation_id=conversation_id,
            )
        )[0]
        for n in range(4)
    ]
    outside, _ = await storage.messages.enqueue("sandbox", OutgoingMessage.text("1555000", "x"), idempotency_key="o")
    cursor = await storage.activity.last_id()

    await storage.outbox.mark_sent([(ids[0], "sandbox", "p0"), (ids[1], "sandbox", "p1"), (outside, "sandbox", "p9")])
    await storage.outbox.mark_failed(ids[2], error_code="131026", reason="undeliverable")
    await storage.outbox.reschedule(ids[3], retry_at=time.time() + 60, error_code="429", reason="slow down")

    assert await feed(storage, cursor) == [
        (conversation_id, "status", ids[0]),
        (conversation_id, "status", ids[1]),
        (conversation_id, "status", ids[2]),
        (conversation_id, "status", ids[3]),
    ]


async def test_owner_changes_are_activities_naming_their_event(storage: Storage) -> None:
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    cursor = await storage.activity.last_id()
    queued = Transition("queued", "rule", "asked for a person", event_key="rule:m1")

    assert await storage.conversations.change_owner(conversation_id, queued, now=10.0) is not None
    assert await storage.conversations.change_owner(conversation_id, queued, now=11.0) is None  # already queued
    ann = Transition("assigned", "operator:ann", "took it", assignee="ann")
    assert await storage.conversations.change_owner(conversation_id, ann, now=12.0) is not None
    assert await storage.conversations.change_owner(conversation_id, ann, now=13.0) is None  # ann has it

    async with storage.db.connect() as conn:
        query = sa.select(conversation_events.c.id).order_by(conversation_events.c.id)
        event_ids = list((await conn.execute(query)).scalars())
    rows = await storage.activity.after(cursor)
    assert len(event_ids) == 2
    assert [(row.conversation_id, row.kind, row.ref_id) for row in rows] == [
        (conversation_id, "owner", event_ids[0]),
        (conversation_id, "owner", event_ids[1]),
    ]
    assert [row.created_at for row in rows] == [10.0, 12.0]


async def test_a_contact_edit_is_an_activity_of_each_of_its_conversations(storage: Storage) -> None:
    record = await storage.messages.record_inbound(inbound("m1"))
    # The same contact in a conversation with a second business number.
    async with storage.db.begin() as conn:
        values = {"contact_id": record.contact_id, "provider": "second", "created_at": 1.0, "updated_at": 1.0}
        second = (await conn.execute(conversations.insert().returning(conversations.c.id), values)).scalar_one()
    cursor = await storage.activity.last_id()

    assert await storage.contacts.update(record.contact_id, {"tags": ["vip"]})
    assert not await storage.contacts.update(record.contact_id + 1000, {"tags": ["vip"]})

    assert await feed(storage, cursor) == [
        (record.conversation_id, "contact", None),
        (second, "contact", None),
    ]


async def test_readers_follow_the_feed_by_id_and_pruning_drops_the_old(storage: Storage) -> None:
    assert await storage.activity.last_id() == 0
    assert await storage.activity.first_id() is None
    assert await storage.activity.after(0) == []
    conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
    notes = [await storage.desk.add_note(conversation_id, "operator:ann", f"note {n}", now=100.0 + n) for n in range(5)]

    everything = await storage.activity.after(0)
    ids = [row.id for row in everything]
    assert ids == sorted(ids) and len(ids) == 6
    assert [row.ref_id for row in everything[1:]] == [note.id for note in notes]
    assert await storage.activity.last_id() == ids[-1]
    assert await storage.activity.first_id() == ids[0]
    assert [row.id for row in await storage.activity.after(ids[1], limit=2)] == ids[2:4]

    # The inbound message's row is dated now, the notes at 100..104.
    assert await storage.activity.prune(102.0) == 2
    assert await storage.activity.first_id() == ids[0]
    assert [row.ref_id for row in await storage.activity.after(0)][1:] == [note.id for note in notes[2:]]
    assert await storage.activity.prune(time.time() + 1) == 4
    assert await storage.activity.first_id() is None
    # The highest id is gone with the rest: a reader at it sees nothing new, as before.
    assert await storage.activity.after(ids[-1]) == []
    # Ids are never handed out again, so that reader's cursor still means "seen up to here".
    await storage.desk.add_note(conversation_id, "operator:ann", "after the prune", now=time.time())
    assert [row.id > ids[-1] for row in await storage.activity.after(ids[-1])] == [True]


async def test_the_hourly_clean_up_prunes_activity_older_than_two_days(database_url: str) -> None:
    async with running_daemon(build_config(database=database_url)) as daemon:
        storage = daemon.hub.storage
        conversation_id = (await storage.messages.record_inbound(inbound("m1"))).conversation_id
        old = await storage.desk.add_note(conversation_id, "operator:ann", "old", now=time.time() - 3 * 24 * 3600)
        recent = await storage.desk.add_note(conversation_id, "operator:ann", "recent", now=time.time() - 24 * 3600)

        await purge_inbox(daemon.hub)

        kept = [(row.kind, row.ref_id) for row in await storage.activity.after(0)]
        assert ("note", old.id) not in kept
        assert ("note", recent.id) in kept and kept[0][0] == "message"
