"""What the operator inbox reads and writes, on a real SQLite file and a real
PostgreSQL: the listing's sections, order, previews and unread counts, search,
notes, each operator's load, and the alerts about conversations left queued."""

from __future__ import annotations

import time

import pytest

from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.core.storage.conversations import Transition
from wahub.core.storage.schema import messages, operators
from wahub.core.storage.store import Storage

#: A moment after every real clock reading in the test, so owner changes dated
#: then are the conversations' latest activity.
LATER = time.time() + 3600


async def add_operator(storage: Storage, name: str) -> int:
    async with storage.db.begin() as conn:
        values = {"name": name, "password_hash": "x", "created_at": 1.0, "updated_at": 1.0}
        return int((await conn.execute(operators.insert().returning(operators.c.id), values)).scalar_one())


async def write(
    storage: Storage, user: str, text: str = "hi", *, name: str | None = None, at: float | None = None
) -> tuple[int, int]:
    """The user writes: returns the conversation and the message ids."""
    external_id = f"m-{user}-{time.monotonic_ns()}"
    message = InboundMessage("sandbox", external_id, user, "text", {"text": {"body": text}}, at or time.time(), name)
    record = await storage.messages.record_inbound(message)
    return record.conversation_id, record.message_id


async def move(storage: Storage, conversation_id: int, change: str, at: float, assignee: str | None = None) -> None:
    transition = Transition(change, "operator:test" if assignee else "rule", "test", assignee=assignee)
    assert await storage.conversations.change_owner(conversation_id, transition, now=at) is not None


def ids(listed: list[dict[str, object]]) -> list[tuple[str, object]]:
    return [(str(item["section"]), item["id"]) for item in listed]


async def test_the_listing_has_its_sections_in_order(storage: Storage) -> None:
    ann = await add_operator(storage, "ann")
    queued_late, _ = await write(storage, "15550000001")
    queued_early, _ = await write(storage, "15550000002")
    released, _ = await write(storage, "15550000003")
    mine, _ = await write(storage, "15550000004")
    bobs, _ = await write(storage, "15550000005")
    phone, _ = await write(storage, "15550000006")
    quiet_bot, _ = await write(storage, "15550000007")
    busy_bot, _ = await write(storage, "15550000008", at=LATER + 50)
    await move(storage, queued_late, "queued", LATER + 10)
    await move(storage, queued_early, "queued", LATER + 5)
    await move(storage, released, "queued", LATER + 1)
    await move(storage, released, "assigned", LATER + 2, "ann")
    await move(storage, released, "released", LATER + 20)
    await move(storage, mine, "assigned", LATER + 3, "ann")
    await move(storage, bobs, "assigned", LATER + 20, "bob")
    await move(storage, phone, "phone", LATER + 30)

    listed = await storage.desk.listing(operator_id=ann, operator="ann")

    assert ids(listed) == [
        ("queued", queued_early),
        ("queued", queued_late),
        ("queued", released),
        ("mine", mine),
        ("open", phone),
        ("open", bobs),
        ("resolved", busy_bot),
        ("resolved", quiet_bot),
    ]
    by_id = {item["id"]: item for item in listed}
    # A released conversation waits in the queue from its release.
    assert [by_id[i]["queued_at"] for i in (queued_early, queued_late, released)] == [LATER + 5, LATER + 10, LATER + 20]
    assert by_id[mine]["queued_at"] is None and by_id[busy_bot]["queued_at"] is None
    assert (by_id[mine]["owner"], by_id[mine]["assignee"]) == ("assigned", "ann")
    assert by_id[busy_bot]["active_at"] == LATER + 50

    # For bob, his conversation is his and ann's is someone else's.
    bob = await add_operator(storage, "bob")
    as_bob = await storage.desk.listing(operator_id=bob, operator="bob", section="mine")
    assert ids(as_bob) == [("mine", bobs)]
    assert ids(await storage.desk.listing(operator_id=bob, operator="bob", section="open")) == [
        ("open", phone),
        ("open", mine),
    ]
    assert ids(await storage.desk.listing(operator_id=ann, operator="ann", limit=1)) == [
        ("queued", queued_early),
        ("mine", mine),
        ("open", phone),
        ("resolved", busy_bot),
    ]
    # A live update lists just the named ones, each in its section, in the page's order.
    only = await storage.desk.listing(operator_id=ann, operator="ann", only=[busy_bot, mine, queued_late])
    assert ids(only) == [("queued", queued_late), ("mine", mine), ("resolved", busy_bot)]
    only_mine = await storage.desk.listing(operator_id=ann, operator="ann", section="mine", only=[busy_bot, mine])
    assert ids(only_mine) == [("mine", mine)]


async def test_an_unknown_section_is_refused_by_name(storage: Storage) -> None:
    with pytest.raises(ValueError, match="unknown inbox section 'closed'"):
        await storage.desk.listing(operator_id=1, operator="ann", section="closed")


async def test_previews_unread_counts_and_tags(storage: Storage) -> None:
    ann, bob = await add_operator(storage, "ann"), await add_operator(storage, "bob")
    conversation_id, first = await write(storage, "15550000001", "hello", name="Ana")
    _, second = await write(storage, "15550000001", "are you there?")
    # While the bot has it, nobody is expected to read it.
    assert (await storage.desk.listing(operator_id=ann, operator="ann"))[0]["unread"] == 0
    await storage.conversations.change_owner(conversation_id, Transition("queued", "rule", "asked"), now=time.time())
    empty = await storage.desk.listing(operator_id=ann, operator="ann")
    assert empty[0]["unread"] == 2 and empty[0]["contact_name"] == "Ana"
    assert empty[0]["last"]["id"] == second and empty[0]["last"]["direction"] == "in"

    await storage.desk.mark_read(ann, conversation_id, first)
    await storage.desk.mark_read(ann, conversation_id, 0)  # never moves back
    reply, _ = await storage.messages.enqueue(
        "sandbox", OutgoingMessage.text("15550000001", "yes!"), idempotency_key="r1", conversation_id=conversation_id
    )
    contact_id = empty[0]["contact_id"]
    await storage.contacts.update(contact_id, {"tags": ["vip", "wholesale"]})

    [item] = await storage.desk.listing(operator_id=ann, operator="ann")
    assert item["unread"] == 1  # the reply is not unread: only the inbound after the last ann read
    assert item["tags"] == ["vip", "wholesale"]
    last = item["last"]
    assert (last["id"], last["direction"], last["type"], last["status"], last["error_code"]) == (
        reply,
        "out",
        "text",
        "queued",
        None,
    )
    assert last["body"]["text"]["body"] == "yes!" and isinstance(last["created_at"], float)
    [for_bob] = await storage.desk.listing(operator_id=bob, operator="bob")
    assert for_bob["unread"] == 2

    await storage.desk.mark_read(ann, conversation_id, second)
    [read] = await storage.desk.listing(operator_id=ann, operator="ann")
    assert read["unread"] == 0


async def test_a_conversation_without_messages_has_no_preview(storage: Storage) -> None:
    ann = await add_operator(storage, "ann")
    conversation_id, message_id = await write(storage, "15550000001")
    async with storage.db.begin() as conn:
        await conn.execute(messages.delete().where(messages.c.id == message_id))
    [item] = await storage.desk.listing(operator_id=ann, operator="ann")
    assert (item["id"], item["last"], item["unread"]) == (conversation_id, None, 0)


async def test_search_finds_names_phones_and_texts_literally(storage: Storage) -> None:
    ann = await add_operator(storage, "ann")
    maria, _ = await write(storage, "15550001111", "добрый день", name="Мария Petrova")
    offer, _ = await write(storage, "15550002222", "is the 50%_off offer on?")
    world, _ = await write(storage, "15550003333", "Hello World")

    async def found(text: str) -> list[object]:
        return [item["id"] for item in await storage.desk.listing(operator_id=ann, operator="ann", search=text)]

    assert await found("МАРИЯ") == [maria]
    assert await found("petrova") == [maria]
    assert await found("ДОБРЫЙ") == [maria]
    assert await found("0002222") == [offer]
    assert await found("%_O") == [offer]
    assert await found("world") == [world]
    assert await found("5%") == []  # % is a character here, not a wildcard
    assert await found("e_l") == []  # nor is _
    assert sorted(await found("1555000")) == sorted([maria, offer, world])


async def test_notes_are_stored_with_their_activity(storage: Storage) -> None:
    conversation_id, _ = await write(storage, "15550000001")
    cursor = await storage.activity.last_id()

    first = await storage.desk.add_note(conversation_id, "operator:ann", "called them back", now=100.0)
    second = await storage.desk.add_note(conversation_id, "operator:bob", "wants a refund", now=200.0)

    assert (first.conversation_id, first.author, first.text, first.created_at) == (
        conversation_id,
        "operator:ann",
        "called them back",
        100.0,
    )
    assert await storage.desk.notes(conversation_id) == [first, second]
    assert await storage.desk.notes(conversation_id, since=150.0) == [second]
    assert await storage.desk.notes_by_id([second.id, first.id, second.id + 100]) == [first, second]
    assert await storage.desk.notes_by_id([]) == []
    feed = [(row.conversation_id, row.kind, row.ref_id) for row in await storage.activity.after(cursor)]
    assert feed == [(conversation_id, "note", first.id), (conversation_id, "note", second.id)]


async def test_messages_by_id_are_whole_rows_in_id_order(storage: Storage) -> None:
    _, first = await write(storage, "15550000001", "one")
    _, second = await write(storage, "15550000001", "two")

    rows = await storage.desk.messages_by_id([second, first])

    assert [(row["id"], row["body"]["text"]["body"], row["direction"]) for row in rows] == [
        (first, "one", "in"),
        (second, "two", "in"),
    ]
    assert await storage.desk.messages_by_id([]) == []


async def test_open_counts_per_operator(storage: Storage) -> None:
    for n, (change, assignee) in enumerate(
        [("assigned", "ann"), ("assigned", "ann"), ("assigned", "bob"), ("queued", None)]
    ):
        conversation_id, _ = await write(storage, f"1555000000{n}")
        await move(storage, conversation_id, change, LATER, assignee)

    assert await storage.desk.open_counts(["ann", "bob", "carol"]) == {"ann": 2, "bob": 1, "carol": 0}
    assert await storage.desk.open_counts([]) == {}


async def test_conversations_left_queued_are_alerted_once(storage: Storage) -> None:
    early, _ = await write(storage, "15550000001")
    late, _ = await write(storage, "15550000002")
    taken, _ = await write(storage, "15550000003")
    released, _ = await write(storage, "15550000004")
    await move(storage, early, "queued", 10.0)
    await move(storage, late, "queued", 20.0)
    await move(storage, taken, "queued", 5.0)
    await move(storage, taken, "assigned", 6.0, "ann")
    await move(storage, released, "queued", 1.0)
    await move(storage, released, "assigned", 2.0, "ann")
    await move(storage, released, "released", 30.0)
    events = {
        conversation_id: (await storage.conversations.events(conversation_id))[-1].at
        for conversation_id in (early, late, released)
    }
    assert events == {early: 10.0, late: 20.0, released: 30.0}

    waiting = await storage.desk.waiting_since(15.0)
    assert [(conversation_id, at) for conversation_id, _, at in waiting] == [(early, 10.0)]
    event_id = waiting[0][1]
    assert await storage.desk.mark_alerted(event_id, now=16.0)
    assert not await storage.desk.mark_alerted(event_id, now=17.0)

    later = await storage.desk.waiting_since(100.0)
    assert [(conversation_id, at) for conversation_id, _, at in later] == [(late, 20.0), (released, 30.0)]
    assert len(await storage.desk.waiting_since(100.0, limit=1)) == 1
