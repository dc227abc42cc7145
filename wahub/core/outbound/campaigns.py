"""The campaign writer: turns notifications (and reminders' firings) into one
queued message per recipient.

A campaign is written out in batches of ``BATCH`` recipients. For each
recipient the campaign's template (or message) is built, its parameters
object made into the template's ``components`` (``template_components``),
and the message checked by the send policy exactly as a single send is
(``hub.policy.check``, origin ``business``): a refusal is counted under its
reason and nothing is queued for that recipient. A recipient is a person,
not a spelling: addresses of one contact (``+1555...`` and ``1555...``, a
wa_id of a contact now addressed by its BSUID) are one recipient, and each
message's idempotency key names the person (``campaign:<id>:c<contact id>``,
or the address without ``+`` for an unknown one). Each batch's messages (lane
1, the campaign's id) are inserted in the same transaction that advances the
campaign's position, so a writer killed anywhere leaves a campaign that the
next one resumes after the last committed batch, with nothing lost or written
twice. Writing that fails for another reason than the database ends the
campaign (``give_up``) rather than trying it again forever.

The writer wakes on ``hub.campaigns_ready`` or every ``POLL_SECONDS`` (for
scheduled campaigns whose time has come) and holds a lease on the campaign it
writes, so one replica at a time writes a campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.core.canonical.validate import parse_message
from wahub.core.errors import InvalidMessage, SendRefused
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.models import OutgoingMessage
from wahub.core.plugins import report_exception
from wahub.core.privacy import mask_address
from wahub.core.provider import Provider
from wahub.core.storage.campaigns import WRITE_FAILED, Batch, Campaign, TemplateLayout
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.messages import queued_values
from wahub.core.storage.segments import Segment
from wahub.core.work.lifecycle import within_grace

_LOGGER = logging.getLogger(__name__)

#: Recipients written per transaction.
BATCH = 200
POLL_SECONDS = 1.0
#: How long a claimed campaign stays this writer's without a batch committed.
LEASE_SECONDS = 30.0
#: The lane of bulk messages: sent after the conversations' (lane 0).
BULK_LANE = 1
#: A notification to at most this many listed addresses (an appointment
#: reminder, an order update) is personal, not bulk: its messages go in the
#: conversations' lane, as a REST API send would, never behind a broadcast.
PERSONAL_AT_MOST = 10


def lane_of(campaign: Campaign) -> int:
    """The lane of a campaign's messages: 0 for a personal one, else bulk."""
    listed = campaign.audience.get("to")
    return 0 if isinstance(listed, list) and len(listed) <= PERSONAL_AT_MOST else BULK_LANE


#: Media a template header parameter may carry.
HEADER_MEDIA = ("image", "video", "document", "location")


def message_key(campaign_id: int, person: str) -> str:
    """The idempotency key of a campaign's message to ``person`` (a ``person_key``)."""
    return f"campaign:{campaign_id}:{person}"


def _text(field: str, value: Any) -> str:
    """A parameter's text: a non-empty string, or a number written as text."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidMessage(field, f"expected a string or a number, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise InvalidMessage(field, "is empty")
    return text


def _header(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": "text", "text": _text("parameters.header", value)}
    kinds = list(value) if isinstance(value, Mapping) else [type(value).__name__]
    if len(kinds) != 1 or kinds[0] not in HEADER_MEDIA:
        raise InvalidMessage(
            "parameters.header", f"expected a text or one media object ({', '.join(HEADER_MEDIA)}), got {kinds[:5]}"
        )
    kind = kinds[0]
    if not isinstance(value[kind], Mapping):
        raise InvalidMessage(f"parameters.header.{kind}", f"expected an object, got {type(value[kind]).__name__}")
    return {"type": kind, kind: dict(value[kind])}


def _button_values(given: Any) -> list[tuple[str, str]]:
    """The ``buttons`` parameter's (index, text) pairs in index order."""
    if not isinstance(given, Mapping):
        raise InvalidMessage("parameters.buttons", f"expected an object of index -> text, got {type(given).__name__}")
    for index in given:
        if not (isinstance(index, str) and index.isdigit() and len(index) == 1):
            raise InvalidMessage(f"parameters.buttons.{str(index)[:20]}", "a button index is one digit, 0 to 9")
    return [(index, _text(f"parameters.buttons.{index}", given[index])) for index in sorted(given, key=int)]


def template_components(parameters: Mapping[str, Any], layout: TemplateLayout) -> list[dict[str, Any]]:
    """The canonical ``components`` of a parameters object: ``"1"``, ``"2"``...
    are positional body parameters, other names named ones, ``header`` the
    header's parameter (named as the template's header names it) and
    ``buttons`` each button's (a URL's variable, or a quick reply's payload
    where the template's button is one). A malformed one is
    ``InvalidMessage`` naming the parameter."""
    if not isinstance(parameters, Mapping):
        raise InvalidMessage("parameters", f"expected an object, got {type(parameters).__name__}")
    stray = next((key for key in parameters if not isinstance(key, str) or not key), None)
    if stray is not None:
        raise InvalidMessage("parameters", f"a parameter's name is a non-empty string, got {stray!r}")
    positional = sorted((key for key in parameters if key.isdigit()), key=int)
    named = [key for key in parameters if not key.isdigit() and key not in ("header", "buttons")]
    body = [{"type": "text", "text": _text(f"parameters.{key}", parameters[key])} for key in positional]
    body += [
        {"type": "text", "parameter_name": key, "text": _text(f"parameters.{key}", parameters[key])} for key in named
    ]
    components: list[dict[str, Any]] = []
    if "header" in parameters:
        header = _header(parameters["header"])
        if header["type"] == "text" and layout.header_name is not None:
            header["parameter_name"] = layout.header_name
        components.append({"type": "header", "parameters": [header]})
    if body:
        components.append({"type": "body", "parameters": body})
    for index, value in _button_values(parameters.get("buttons", {})):
        sub_type = layout.buttons.get(index, "url")
        parameter = (
            {"type": "payload", "payload": value} if sub_type == "quick_reply" else {"type": "text", "text": value}
        )
        components.append({"type": "button", "sub_type": sub_type, "index": index, "parameters": [parameter]})
    return components


@dataclass(frozen=True)
class Plan:
    """What a campaign sends: its template (with language and parameters) or
    its message, through which provider, from when."""

    provider: str
    template: str | None
    language: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    per_recipient: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    message: Mapping[str, Any] | None = None
    send_at: float | None = None
    #: How the stored template takes the parameters.
    layout: TemplateLayout = field(default_factory=TemplateLayout)

    @classmethod
    def of(cls, campaign: Campaign, layout: TemplateLayout) -> Plan:
        return cls(
            provider=campaign.provider,
            template=campaign.template,
            language=campaign.language,
            parameters=campaign.parameters or {},
            per_recipient=campaign.per_recipient or {},
            message=campaign.message,
            send_at=campaign.send_at,
            layout=layout,
        )

    def message_to(self, address: str) -> OutgoingMessage:
        """The message for ``address``, checked as the REST API checks one;
        ``InvalidMessage`` names what is wrong."""
        if self.template is None:
            assert self.message is not None
            body: dict[str, Any] = {**self.message, "to": address}
        else:
            parameters = {**self.parameters, **self.per_recipient.get(address, {})}
            template: dict[str, Any] = {"name": self.template}
            if self.language is not None:
                template["language"] = {"code": self.language}
            components = template_components(parameters, self.layout)
            if components:
                template["components"] = components
            body = {"to": address, "type": "template", "template": template}
        return dataclasses.replace(parse_message(body), keep_address=True)


@dataclass
class Outcome:
    """One recipient's fate: the message as the policy let it go, or the refusal."""

    address: str
    person: str
    message: OutgoingMessage | None = None
    contact_id: int | None = None
    conversation_id: int | None = None
    not_before: float | None = None
    reason: str | None = None
    detail: str = ""


async def judge(hub: Hub, provider: Provider, plan: Plan, address: str, person: str) -> Outcome:
    """``address``'s message (to ``person``) checked by the send policy as a single send is."""
    try:
        decision = await hub.policy.check(provider, plan.message_to(address), origin="business")
    except InvalidMessage as exc:
        return Outcome(address, person, reason="invalid_message", detail=str(exc))
    except SendRefused as exc:
        return Outcome(address, person, reason=exc.reason, detail=str(exc))
    return Outcome(
        address,
        person,
        decision.message,
        decision.contact.contact_id,
        decision.contact.conversation_id,
        decision.not_before,
    )


def segment_of(hub: Hub, provider: str, audience: Mapping[str, Any]) -> Segment:
    spec = audience["segment"]
    default_zone = hub.config["wahub"].get("timezone", "UTC")
    return Segment(provider, tuple(spec["tags"]), spec.get("timezone"), default_zone)


#: The position of a segment walked to its end.
_END = 2**62


async def audience_page(hub: Hub, provider: str, audience: Mapping[str, Any], position: int) -> tuple[list[str], int]:
    """The next addresses of an audience from ``position`` on, and the position after them."""
    if "to" in audience:
        addresses: list[str] = audience["to"][position : position + BATCH]
        return addresses, position + len(addresses)
    page = await hub.storage.campaigns.segment_page(segment_of(hub, provider, audience), after=position, limit=BATCH)
    return page.addresses, _END if page.next_after is None else page.next_after


def walked(audience: Mapping[str, Any], position: int) -> bool:
    """Whether an audience is written out at ``position``."""
    if "to" in audience:
        return position >= len(audience["to"])
    return position >= _END


async def count_audience(hub: Hub, provider: str, audience: Mapping[str, Any], *, stop_above: int) -> int:
    """How many recipients the audience has, counting no further than ``stop_above + 1``
    (a segment is counted in SQL)."""
    if "to" in audience:
        return len(audience["to"])
    return await hub.storage.campaigns.segment_count(segment_of(hub, provider, audience), limit=stop_above + 1)


async def people_of(hub: Hub, provider: str, addresses: Sequence[str]) -> list[tuple[str, str]]:
    """``addresses`` as ``(address, person)``, each person once (at its first address)."""
    people = await hub.storage.campaigns.people(provider, addresses)
    first: dict[str, str] = {}
    for address in addresses:
        first.setdefault(people[address], address)
    return [(address, person) for person, address in first.items()]


async def preview(hub: Hub, plan: Plan, audience: Mapping[str, Any]) -> tuple[int, Counter[str], dict[str, str]]:
    """What writing the campaign would do now: the recipients that would be
    queued, the refusals by reason and each reason's first explanation."""
    provider = hub.provider(plan.provider)
    queued, refused, position = 0, Counter[str](), 0
    details: dict[str, str] = {}
    while not walked(audience, position):
        addresses, position = await audience_page(hub, plan.provider, audience, position)
        for address, person in await people_of(hub, plan.provider, addresses):
            outcome = await judge(hub, provider, plan, address, person)
            if outcome.reason is None:
                queued += 1
            else:
                refused[outcome.reason] += 1
                details.setdefault(outcome.reason, outcome.detail)
    return queued, refused, details


def _row(campaign: Campaign, outcome: Outcome, now: float) -> dict[str, Any]:
    assert outcome.message is not None
    values = queued_values(
        campaign.provider,
        outcome.message,
        idempotency_key=message_key(campaign.id, outcome.person),
        now=now,
        conversation_id=outcome.conversation_id,
        contact_id=outcome.contact_id,
        not_before=max(campaign.send_at or 0.0, outcome.not_before or 0.0),
        lane=lane_of(campaign),
    )
    return {**values, "campaign_id": campaign.id}


class CampaignWriter:
    """Claims campaigns and writes them out, one batch per transaction."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._stopping = False

    async def claim(self) -> Campaign | None:
        return await self.hub.storage.campaigns.claim(now=self.hub.clock.time(), lease_seconds=LEASE_SECONDS)

    async def step(self, campaign: Campaign) -> Campaign | None:
        """Write the campaign's next batch; the campaign as it stands after it,
        or None when it is done (written out, cancelled or taken over)."""
        hub = self.hub
        provider = hub.provider(campaign.provider)
        plan = Plan.of(campaign, await hub.storage.campaigns.template_layout(campaign.provider, campaign.template))
        addresses, position = await audience_page(hub, campaign.provider, campaign.audience, campaign.position)
        now = hub.clock.time()
        rows, refused = [], Counter[str]()
        for address, person in await people_of(hub, campaign.provider, addresses):
            outcome = await judge(hub, provider, plan, address, person)
            if outcome.reason is None:
                rows.append(_row(campaign, outcome, now))
            else:
                refused[outcome.reason] += 1
                _LOGGER.debug("notification %d: not sent to %s: %s", campaign.id, mask_address(address), outcome.reason)
        batch = Batch(rows, dict(refused), position, walked(campaign.audience, position))
        inserted = await hub.storage.campaigns.write_batch(campaign, batch, now=now, lease_seconds=LEASE_SECONDS)
        if inserted is None:
            return None
        self._count(campaign, inserted, refused)
        if inserted:
            hub.outbox_ready.set()
        if batch.last:
            _LOGGER.info("notification %d is written out", campaign.id)
            return None
        return dataclasses.replace(campaign, position=position)

    def _count(self, campaign: Campaign, inserted: int, refused: Counter[str]) -> None:
        recipients = self.hub.metrics.notification_recipients
        if inserted:
            recipients.labels(campaign.provider, campaign.source, "queued", "").inc(inserted)
        for reason, count in refused.items():
            recipients.labels(campaign.provider, campaign.source, "refused", reason).inc(count)

    async def write(self, campaign: Campaign) -> None:
        """Write ``campaign`` out to its end (or until it is cancelled or shutdown
        begins). A database outage is raised, to try again; any other failure
        would fail again at every try, so the campaign is given up."""
        current: Campaign | None = campaign
        while current is not None and not self._stopping:
            try:
                following = await self.step(current)
            except Exception as exc:
                if database_unreachable(exc, from_storage=True):
                    raise
                await self._give_up(current, exc)
                return
            current = following

    async def _give_up(self, campaign: Campaign, exc: Exception) -> None:
        _LOGGER.exception(
            "writing notification %d failed; it stops here: the recipients not written are counted refused under %s",
            campaign.id,
            WRITE_FAILED,
        )
        report_exception(self.hub, exc, {"loop": "campaigns", "notification": campaign.id})
        await self.hub.storage.campaigns.give_up(campaign, now=self.hub.clock.time())

    async def run(self) -> None:
        """Claim and write campaigns until ``stop``."""
        if self.hub.storage.is_sqlite:
            released = await self.hub.storage.campaigns.release_claims()
            if released:
                _LOGGER.warning("%d notifications were being written at the last shutdown; resuming them", released)
        while not self._stopping:
            self.hub.campaigns_ready.clear()
            try:
                campaign = await self.claim()
                if campaign is not None:
                    await self.write(campaign)
                    continue
            except Exception as exc:  # noqa: BLE001 - logged, tried again at the next turn
                self._failed(exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self.hub.campaigns_ready.wait()

    def _failed(self, exc: Exception) -> None:
        if database_unreachable(exc, from_storage=True):
            _LOGGER.warning("cannot write notifications, the database is unreachable (%r); trying again", exc)
            return
        _LOGGER.exception("writing a notification failed; trying again")
        report_exception(self.hub, exc, {"loop": "campaigns"})

    def stop(self) -> None:
        """Write no further batch: the one under way commits or rolls back whole."""
        self._stopping = True
        self.hub.campaigns_ready.set()


def refusal_for_all(recipients: int, refused: Mapping[str, int], reasons: Sequence[str]) -> str | None:
    """The reason every recipient was refused for, if it is one of ``reasons``
    (refusals of the message itself, not of its recipients)."""
    if recipients and len(refused) == 1:
        [(reason, count)] = refused.items()
        if count == recipients and reason in reasons:
            return reason
    return None


async def campaigns_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    writer = CampaignWriter(hub)
    task = asyncio.create_task(writer.run(), name="wahub-campaigns")
    yield
    writer.stop()
    # A batch cut off rolls back whole: the next start writes it again.
    await within_grace(
        "sends",
        {task},
        on_timeout_message="the notification batch being written at shutdown is written again at the next start",
        logger=_LOGGER,
    )
