"""The REST API's notifications: one template to many contacts, written out
in the background by the campaign writer (``wahub.core.outbound.campaigns``).

- ``POST /api/v1/notifications``: ``{"template", "language"?, "to": [...] |
  "segment": {"tags", "timezone"?}, "parameters"?, "per_recipient"?,
  "send_at"?, "dry_run"?, "provider"?}``. 202 ``{"id", "state",
  "recipients", "refused", "preview"}``: recipients are people (every
  spelling of one contact's address counts once); up to ``PREVIEW_LIMIT`` of
  them, the refusals counted by the send policy's checks as they stand now
  (``"preview": "exact"``); above it, answered at once with ``"refused":
  null`` (``"deferred"``: the GET counts refusals as they are written). A dry
  run always previews exactly, answers 200 with ``"id": null`` and stores
  nothing. When every recipient is refused for the message itself (a
  missing parameter, a template not approved), 422 with that reason. The same
  request with the same Idempotency-Key answers 200 with the stored
  notification (``"stored"``), checking nothing again.
- ``GET /api/v1/notifications/{id}``: the notification and its messages
  counted by status; ``POST /api/v1/notifications/{id}/cancel`` stops it.
- ``GET /api/v1/notifications?limit&after``: newest first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from wahub.core.errors import SendRefused
from wahub.core.http.api_io import aware_time, error, idempotency_key, json_response, path_id
from wahub.core.http.api_query import check_known, cursor, page_limit
from wahub.core.http.notification_schemas import CREATED, DETAIL, LISTING, REQUEST
from wahub.core.http.openapi import (
    IDEMPOTENCY_KEY,
    PAGE_AFTER,
    PAGE_LIMIT,
    Answer,
    Operation,
    Param,
    body_of,
    errors,
)
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.models import MessageStatus
from wahub.core.outbound.campaigns import Plan, count_audience, preview, refusal_for_all
from wahub.core.storage.campaigns import CANCELLED_CODE, MAX_RECIPIENTS, Campaign, initial_state

TAG = "Notifications"
#: Refusals of the message itself: when every recipient gets one, nothing is created.
MESSAGE_REFUSALS = ("invalid_message", "template_not_found", "template_not_approved")
#: Largest audience whose refusals the POST counts before answering; a larger
#: one is answered at once and its refusals counted as it is written.
PREVIEW_LIMIT = 5000


class Refused(Exception):
    """A request refused before anything is stored: the status, code and message of its answer."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details

    def answer(self) -> web.Response:
        return error(self.status, self.code, str(self), **self.details)


def _invalid(field: str, message: str) -> Refused:
    return Refused(422, "invalid_notification", f"{field}: {message}", field=field)


def _send_at(given: str | None) -> float | None:
    if given is None:
        return None
    try:
        return aware_time(given)
    except ValueError as exc:
        raise _invalid("$.send_at", str(exc)) from None


def _audience(body: Mapping[str, Any]) -> dict[str, Any]:
    if ("to" in body) == ("segment" in body):
        raise _invalid("$", "give exactly one of to (a list of addresses) and segment (tags)")
    if "to" in body:
        return {"to": list(dict.fromkeys(body["to"]))}
    segment = dict(body["segment"])
    segment["tags"] = list(dict.fromkeys(segment["tags"]))
    if "timezone" in segment:
        try:
            ZoneInfo(segment["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise _invalid("$.segment.timezone", f"{segment['timezone'][:64]!r} is not an IANA time zone") from None
    return {"segment": segment}


def _per_recipient(body: Mapping[str, Any], audience: Mapping[str, Any]) -> dict[str, Any]:
    given: dict[str, Any] = body.get("per_recipient") or {}
    if "to" in audience:
        listed = set(audience["to"])
        stray = next((address for address in given if address not in listed), None)
        if stray is not None:
            raise _invalid(f"$.per_recipient.{stray[:40]}", "is not one of the addresses in to")
    return given


def _request_fields(hub: Hub, body: Mapping[str, Any]) -> dict[str, Any]:
    """The campaign's fields from a checked body."""
    try:
        provider = hub.provider(body.get("provider")).name
    except SendRefused as exc:
        raise Refused(422, exc.reason, str(exc), field="$.provider") from None
    audience = _audience(body)
    return {
        "provider": provider,
        "template": body["template"],
        "language": body.get("language"),
        "audience": audience,
        "parameters": body.get("parameters") or None,
        "per_recipient": _per_recipient(body, audience) or None,
        "send_at": _send_at(body.get("send_at")),
    }


async def _by_person(hub: Hub, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with ``to`` listing each person once, at the first of its
    addresses, and ``per_recipient`` keyed the same way (the parameters given
    for several addresses of one person merged in list order)."""
    if "to" not in fields["audience"]:
        return dict(fields)
    given: Mapping[str, Any] = fields["per_recipient"] or {}
    kept: dict[str, str] = {}
    per_recipient: dict[str, Any] = {}
    people = await hub.storage.campaigns.people(fields["provider"], fields["audience"]["to"])
    for address in fields["audience"]["to"]:
        first = kept.setdefault(people[address], address)
        if address in given:
            per_recipient[first] = {**per_recipient.get(first, {}), **given[address]}
    return {**fields, "audience": {"to": list(kept.values())}, "per_recipient": per_recipient or None}


def _same_request(campaign: Campaign, fields: Mapping[str, Any]) -> bool:
    stored = {
        "provider": campaign.provider,
        "template": campaign.template,
        "language": campaign.language,
        "audience": campaign.audience,
        "parameters": campaign.parameters,
        "per_recipient": campaign.per_recipient,
        "send_at": campaign.send_at,
    }
    return json.dumps(stored, sort_keys=True) == json.dumps(dict(fields), sort_keys=True)


async def _recipients(hub: Hub, fields: Mapping[str, Any]) -> int:
    """How many the audience has (counted in SQL); ``Refused`` when too many."""
    recipients = await count_audience(hub, fields["provider"], fields["audience"], stop_above=MAX_RECIPIENTS)
    if recipients > MAX_RECIPIENTS:
        raise Refused(
            422,
            "too_many_recipients",
            f"the audience has more than {MAX_RECIPIENTS} recipients: split it into several notifications",
            field="$.segment" if "segment" in fields["audience"] else "$.to",
        )
    return recipients


async def _previewed(hub: Hub, fields: Mapping[str, Any], recipients: int, *, strict: bool) -> dict[str, int]:
    """The refusals by reason; ``Refused`` when (``strict``) the message itself
    is refused for everyone."""
    plan = Plan(
        provider=fields["provider"],
        template=fields["template"],
        language=fields["language"],
        parameters=fields["parameters"] or {},
        per_recipient=fields["per_recipient"] or {},
        send_at=fields["send_at"],
        layout=await hub.storage.campaigns.template_layout(fields["provider"], fields["template"]),
    )
    _queued, refused, details = await preview(hub, plan, fields["audience"])
    everyone = refusal_for_all(recipients, refused, MESSAGE_REFUSALS)
    if strict and everyone is not None:
        raise Refused(422, everyone, details[everyone])
    return dict(refused)


async def create_notification(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = body_of(request)
    dry_run = bool(body.get("dry_run"))
    try:
        key = idempotency_key(request)
        fields = await _by_person(hub, _request_fields(hub, body))
        existing = await hub.storage.campaigns.find_by_key(key)
        if existing is not None and not _same_request(existing, fields):
            raise Refused(409, "idempotency_conflict", "this Idempotency-Key was used for another notification")
        if existing is not None and not dry_run:
            return json_response(_answer(existing, existing.refused, "stored"))
        recipients = await _recipients(hub, fields)
        refused: dict[str, int] | None = None
        if dry_run or recipients <= PREVIEW_LIMIT:
            # A dry run repeating a stored request previews it without refusing it.
            refused = await _previewed(hub, fields, recipients, strict=existing is None)
    except Refused as exc:
        return exc.answer()
    kind = "deferred" if refused is None else "exact"
    now = hub.clock.time()
    if dry_run:
        state = initial_state(fields["send_at"], now)
        return json_response(
            {"id": None, "state": state, "recipients": recipients, "refused": refused, "preview": kind}
        )
    campaign_id, created = await hub.storage.campaigns.create(
        **fields, source="api", idempotency_key=key, now=now, recipients=recipients
    )
    if created:
        hub.campaigns_ready.set()
    campaign = await hub.storage.campaigns.get(campaign_id)
    assert campaign is not None
    if not created:
        # Another request with this key stored its notification meanwhile.
        return json_response(_answer(campaign, campaign.refused, "stored"))
    return json_response(_answer(campaign, refused, kind), status=202)


def _answer(campaign: Campaign, refused: Mapping[str, int] | None, kind: str) -> dict[str, Any]:
    """The POST's answer for a stored notification."""
    return {
        "id": campaign.id,
        "state": campaign.state,
        "recipients": campaign.recipients,
        "refused": None if refused is None else dict(refused),
        "preview": kind,
    }


def _summary(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "state": campaign.state,
        "template": campaign.template,
        "language": campaign.language,
        "source": campaign.source,
        "recipients": campaign.recipients,
        "refused": campaign.refused,
        "send_at": campaign.send_at,
        "created_at": campaign.created_at,
        "expanded_at": campaign.expanded_at,
        "cancelled_at": campaign.cancelled_at,
    }


def counted(by_status: Mapping[tuple[str, str | None], int]) -> tuple[int, dict[str, Any]]:
    """The messages written and their counts by status, failures by error code
    (those a cancel stopped counted apart)."""
    counts: dict[str, Any] = {"queued": 0, "sent": 0, "delivered": 0, "read": 0, "failed": {}, "cancelled": 0}
    for (status, code), count in by_status.items():
        if status == MessageStatus.FAILED and code == CANCELLED_CODE:
            counts["cancelled"] += count
        elif status == MessageStatus.FAILED:
            failed = code or "unknown"
            counts["failed"][failed] = counts["failed"].get(failed, 0) + count
        elif status in counts:
            counts[status] += count
    return sum(by_status.values()), counts


async def notification_answer(hub: Hub, campaign: Campaign) -> dict[str, Any]:
    written, counts = counted(await hub.storage.campaigns.message_counts(campaign.id))
    return {**_summary(campaign), "written": written, "counts": counts}


async def get_notification(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    campaign_id = path_id(request, what="notification")
    campaign = await hub.storage.campaigns.get(campaign_id)
    if campaign is None:
        return error(404, "not_found", f"no notification {campaign_id}")
    return json_response(await notification_answer(hub, campaign))


async def cancel_notification(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    campaign_id = path_id(request, what="notification")
    if not await hub.storage.campaigns.cancel(campaign_id, now=hub.clock.time()):
        return error(404, "not_found", f"no notification {campaign_id}")
    campaign = await hub.storage.campaigns.get(campaign_id)
    assert campaign is not None
    return json_response(await notification_answer(hub, campaign))


async def list_notifications(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ("limit", "after"))
    items, next_after = await hub.storage.campaigns.list(after=cursor(request, "after"), limit=page_limit(request))
    return json_response({"notifications": [_summary(item) for item in items], "next": next_after})


_ID = Param("id", {"type": "integer", "minimum": 1}, "The notification's id", where="path", required=True)


def operations() -> list[Operation]:
    return [
        Operation(
            "post",
            "/api/v1/notifications",
            create_notification,
            "Send a template to many contacts",
            TAG,
            {
                202: Answer("Created; its messages are written in the background", CREATED),
                200: Answer(
                    "A dry run (what it would do, nothing stored), or a replay of a request with the same "
                    "Idempotency-Key: the notification stored by the first one, nothing checked or sent again",
                    CREATED,
                ),
                **errors(400, 401, 409, 422),
            },
            description="Refusals (opted out, no marketing opt-in, ...) are counted by reason and never sent. "
            f"Above {PREVIEW_LIMIT} recipients the answer comes at once with refused null (preview deferred); "
            "a dry run always counts them, which takes a while for a large audience.",
            body=REQUEST,
            body_error="invalid_notification",
            params=[IDEMPOTENCY_KEY],
        ),
        Operation(
            "get",
            "/api/v1/notifications",
            list_notifications,
            "List notifications, newest first",
            TAG,
            {200: Answer("A page of notifications", LISTING), **errors(400, 401)},
            params=[
                PAGE_LIMIT,
                PAGE_AFTER,
            ],
        ),
        Operation(
            "get",
            "/api/v1/notifications/{id}",
            get_notification,
            "A notification and its messages by status",
            TAG,
            {200: Answer("The notification", DETAIL), **errors(401, 404)},
            params=[_ID],
        ),
        Operation(
            "post",
            "/api/v1/notifications/{id}/cancel",
            cancel_notification,
            "Cancel a notification: its messages not yet sent fail as cancelled",
            TAG,
            {200: Answer("The notification, cancelled", DETAIL), **errors(401, 404)},
            params=[_ID],
        ),
    ]
