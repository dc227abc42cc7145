"""An opt-out withdraws what the business queued for the contact and has not
sent yet (a notification waiting for quiet hours or a pacing slot), in the same
transaction; replies and messages in flight are left alone."""

from __future__ import annotations

import time

from wahub.core.models import MessageStatus, OutgoingMessage
from wahub.core.storage.policy import Template
from wahub.core.storage.store import Storage

USER = "15550001111"


def template(name: str) -> OutgoingMessage:
    return OutgoingMessage(to=USER, type="template", content={"template": {"name": name, "language": {"code": "en"}}})


async def queue(storage: Storage, message: OutgoingMessage, key: str, *, origin: str = "business") -> int:
    message_id, _ = await storage.messages.enqueue("p", message, idempotency_key=key, origin=origin, lane=1)
    return message_id


async def opt_out(storage: Storage, scope: str) -> None:
    await storage.policy.record_consent(
        "p", USER, action="opt_out", scope=scope, source="keyword", evidence={"text": "STOP"}, occurred_at=time.time()
    )


async def status(storage: Storage, message_id: int) -> tuple[str, str | None]:
    row = await storage.messages.get(message_id)
    assert row is not None
    return row["status"], row["error_code"]


async def test_an_opt_out_fails_the_queued_business_messages_but_not_a_reply(storage: Storage) -> None:
    notice = await queue(storage, template("weekly_digest"), "campaign:1:a")
    text = await queue(storage, OutgoingMessage.text(USER, "see you"), "api:x")
    reply = await queue(storage, OutgoingMessage.text(USER, "You are unsubscribed"), "reply:1", origin="reply")
    other = await storage.messages.enqueue("p", OutgoingMessage.text("15559999999", "hi"), idempotency_key="api:y")

    await opt_out(storage, "all")

    assert await status(storage, notice) == (MessageStatus.FAILED, "opted_out")
    assert await status(storage, text) == (MessageStatus.FAILED, "opted_out")
    assert await status(storage, reply) == (MessageStatus.QUEUED, None)
    assert await status(storage, other[0]) == (MessageStatus.QUEUED, None)
    row = await storage.messages.get(notice)
    assert row is not None and "opted out" in row["error_reason"]


async def test_a_marketing_opt_out_withdraws_only_marketing_templates(storage: Storage) -> None:
    await storage.policy.upsert_template("p", Template("sale", "en", "MARKETING", "APPROVED"))
    await storage.policy.upsert_template("p", Template("receipt", "en", "UTILITY", "APPROVED"))
    sale = await queue(storage, template("sale"), "campaign:1:a")
    receipt = await queue(storage, template("receipt"), "campaign:2:a")

    await opt_out(storage, "marketing")

    assert await status(storage, sale) == (MessageStatus.FAILED, "opted_out")
    assert await status(storage, receipt) == (MessageStatus.QUEUED, None)


async def test_a_message_a_dispatcher_holds_is_left_to_it(storage: Storage) -> None:
    held = await queue(storage, template("weekly_digest"), "campaign:1:a")
    claimed = await storage.outbox.claim_outbox(10, 60.0, ["p"])
    assert [row.id for row in claimed] == [held]

    await opt_out(storage, "all")

    assert await status(storage, held) == (MessageStatus.QUEUED, None)


async def test_an_opt_out_holds_for_every_spelling_of_a_number_no_contact_has(storage: Storage) -> None:
    queued = await storage.messages.enqueue(
        "p", OutgoingMessage.text(f"+{USER}", "news"), idempotency_key="api:plus", origin="business"
    )
    await opt_out(storage, "all")  # recorded for the number without "+"

    assert (await storage.policy.consent("p", f"+{USER}")).opted_out
    assert (await storage.policy.consent("p", USER)).opted_out
    assert await status(storage, queued[0]) == (MessageStatus.FAILED, "opted_out")
