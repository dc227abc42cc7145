"""Round-robin assignment of queued conversations to operators whose page is
open, and the alerts (Apprise) about queued conversations nobody took.

With ``inbox.auto_assign`` a conversation, as it is queued, goes to the
present operator (a page whose socket was live in the last ``PRESENT_SECONDS``)
holding the fewest conversations, under ``inbox.max_open_per_operator``, the
one given a conversation least recently first; those that found nobody are
offered again every 15 s. A conversation queued ``inbox.notify_after``
minutes ago and still not taken sends one message to the ``inbox.notify``
URLs, once (the alert is recorded before it is sent, so replicas never both send).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Sequence

from wahub.core.conversations.ownership import change_owner
from wahub.core.hub import Hub
from wahub.core.models import Conversation, Owner, OwnershipChange
from wahub.core.storage.operators import Operator
from wahub.hookspecs import JobSpec
from wahub.plugins.inbox.state import Inbox, inbox_of

_LOGGER = logging.getLogger(__name__)

#: An operator is present while their page's socket was live this recently.
PRESENT_SECONDS = 60.0
#: The actor of automatic assignments, in the conversation's history.
ACTOR = "inbox"
#: Queued conversations offered again at once.
OFFER_BATCH = 200


def _masked(address: str) -> str:
    return f"…{address[-4:]}" if len(address) > 4 else address


async def _candidates(inbox: Inbox) -> list[tuple[Operator, int]]:
    """Present operators under the limit, each with how many conversations they hold."""
    hub = inbox.hub
    present = await hub.storage.operators.live_operators(hub.clock.time() - PRESENT_SECONDS)
    if not present:
        return []
    counts = await hub.storage.desk.open_counts([operator.name for operator in present])
    limit = int(inbox.config["max_open_per_operator"])
    return [(operator, counts.get(operator.name, 0)) for operator in present if counts.get(operator.name, 0) < limit]


async def offer(inbox: Inbox, conversation_ids: Sequence[int], *, passing_over: str | None = None) -> int:
    """Give each queued conversation of ``conversation_ids`` to an operator in
    turn, while one is free (never to ``passing_over``, the operator who just
    gave it back); how many were given."""
    hub = inbox.hub
    candidates = [entry for entry in await _candidates(inbox) if entry[0].name != passing_over]
    if not candidates:
        return 0
    limit = int(inbox.config["max_open_per_operator"])
    last = await hub.storage.operators.last_assigned([operator.id for operator, _ in candidates])
    load = {operator.id: count for operator, count in candidates}
    given = 0
    for conversation_id in conversation_ids:
        free = [operator for operator, _ in candidates if load[operator.id] < limit]
        if not free:
            break
        chosen = min(free, key=lambda o: (load[o.id], last.get(o.id, 0.0), o.name))
        done = await change_owner(
            hub,
            conversation_id,
            "assigned",
            actor=ACTOR,
            reason=f"given to {chosen.name} in turn (inbox.auto_assign)",
            assignee=chosen.name,
            only_from=frozenset({Owner.QUEUED}),
        )
        if done is None:
            continue  # taken meanwhile, or no longer queued
        now = hub.clock.time()
        await hub.storage.operators.mark_assigned(chosen.id, now)
        load[chosen.id] += 1
        last[chosen.id] = now
        given += 1
    return given


async def on_change(inbox: Inbox, conversation: Conversation, change: OwnershipChange) -> None:
    """A newly queued conversation goes to a present operator at once, when ``auto_assign`` is on."""
    if change.to_owner != Owner.QUEUED or not inbox.config["auto_assign"]:
        return
    releaser = change.actor.removeprefix("operator:") if change.change == "released" else None
    try:
        await offer(inbox, [conversation.id], passing_over=releaser)
    except Exception:
        # The hand-off itself stands; the job offers it again.
        _LOGGER.exception("conversation %d: automatic assignment failed", conversation.id)


async def offer_waiting(hub: Hub) -> None:
    """Offer the conversations still queued again, oldest first (a job, every 15 s)."""
    inbox = inbox_of(hub)
    queued = await hub.storage.desk.listing(operator_id=0, operator="", section="queued", limit=OFFER_BATCH)
    if queued:
        await offer(inbox, [row["id"] for row in queued])


async def alert_waiting(hub: Hub) -> None:
    """Tell ``inbox.notify`` about each conversation queued for ``notify_after``
    minutes and not taken, once (a job, every 30 s)."""
    inbox = inbox_of(hub)
    urls: list[str] = list(inbox.config["notify"])
    if not urls:
        return
    now = hub.clock.time()
    waiting = await hub.storage.desk.waiting_since(now - float(inbox.config["notify_after"]) * 60)
    for conversation_id, event_id, queued_at in waiting:
        if not await hub.storage.desk.mark_alerted(event_id, now=now):
            continue  # another replica sent it
        conversation = await hub.storage.conversations.get(conversation_id)
        who = "a contact" if conversation is None else conversation.contact_name or _masked(conversation.address)
        minutes = max(0, round((now - queued_at) / 60))
        body = f"Conversation {conversation_id} with {who} has waited {minutes} min for a person in the inbox."
        await notify(urls, title="wahub: a conversation waits for a person", body=body)


def _apprise_notify(urls: Sequence[str], title: str, body: str) -> bool:
    """Apprise's send, blocking (it loads its plugins on first use and posts synchronously)."""
    import apprise  # imported here: only an inbox with inbox.notify loads it

    with warnings.catch_warnings():
        # Some of Apprise's plugin modules import deprecated modules (imghdr): not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        sender = apprise.Apprise()
        for url in urls:
            if not sender.add(url):
                _LOGGER.warning("inbox.notify: Apprise does not understand a %s:// URL", url.split(":")[0])
        if not len(sender):
            return False
        return bool(sender.notify(body=body, title=title))


async def notify(urls: Sequence[str], *, title: str, body: str) -> bool:
    """Send one message to every Apprise URL; a failure is logged, never raised."""
    try:
        sent = await asyncio.to_thread(_apprise_notify, urls, title, body)
    except Exception:
        _LOGGER.exception("inbox.notify: sending the alert failed")
        return False
    if not sent:
        _LOGGER.warning("inbox.notify: the alert did not reach every URL (see Apprise's log)")
    return sent


async def purge_sessions(hub: Hub) -> None:
    """Delete ended sessions (a job, hourly)."""
    purged = await hub.storage.operators.purge_sessions(hub.clock.time())
    await hub.storage.operators.purge_failures(hub.clock.time(), hub.config["inbox"]["sign_in"]["lock_minutes"] * 60)
    if purged:
        _LOGGER.info("inbox: deleted %d expired sessions", purged)


def jobs(hub: Hub) -> list[JobSpec]:
    config = hub.config["inbox"]
    specs = [JobSpec("inbox.purge_sessions", purge_sessions, "interval", {"hours": 1})]
    if config["auto_assign"]:
        specs.append(JobSpec("inbox.offer_queued", offer_waiting, "interval", {"seconds": 15}))
    if config["notify"]:
        specs.append(JobSpec("inbox.alert_waiting", alert_waiting, "interval", {"seconds": 30}))
    return specs
