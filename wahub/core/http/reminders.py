"""The REST API's reminders: a template (or a free-text message) sent to some
addresses at a time, some time before an event, or again and again on a cron.

- ``POST /api/v1/reminders``: ``{"to", "template" | "message", "language"?,
  "parameters"?, "provider"?}`` with one of ``"at"`` (an ISO 8601 time with
  its offset), ``"before": {"event_at", "offset"}`` (``24h``, ``90m``,
  ``1d2h``) or ``"cron"`` with ``"timezone"``. 201 with the reminder (200 when
  the ``Idempotency-Key`` was used before: the first reminder); 422 naming the
  field, for a time in the past too.
- ``GET /api/v1/reminders``: every reminder by id, the configured ones too
  (read-only); ``{"reminders": [...], "next": cursor|null}``.
- ``GET /api/v1/reminders/{id}``; ``DELETE /api/v1/reminders/{id}`` cancels
  it and the notifications it created that are still waiting, being written
  or queued (404 unknown, 409 for a configured one: it is changed in the
  configuration).

A reminder shows how many notifications its firings created
(``notifications_count``) and the latest ``LATEST_NOTIFICATIONS`` of them.

A free-text message is sent only to those whose service window is open when
the reminder fires; the others are refused and counted on its notification.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import voluptuous as vol
from aiohttp import web

from wahub.core.canonical.validate import parse_message
from wahub.core.config.validators import language_code, timezone_name
from wahub.core.errors import InvalidMessage, SendRefused
from wahub.core.http.api_io import aware_time, error, idempotency_key, iso_time, json_response, path_id
from wahub.core.http.api_query import check_known, cursor, page_limit
from wahub.core.http.api_schemas import MAYBE_TIME, TIME
from wahub.core.http.notification_schemas import PARAMETERS
from wahub.core.http.openapi import (
    IDEMPOTENCY_KEY,
    PAGE_AFTER,
    PAGE_LIMIT,
    Answer,
    Operation,
    Param,
    Schema,
    body_of,
    errors,
)
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.outbound.cron import CronError, next_after, parse
from wahub.core.storage.schedules import CONFIG, LATEST_NOTIFICATIONS, Notifications, ScheduleSpec

#: Seconds late a reminder of the API may still go (as a configured one by default).
MISFIRE_GRACE = 3600.0
MAX_RECIPIENTS = 1000
#: Longest ``before.offset``: a reminder goes at most a year before its event.
MAX_OFFSET_DAYS = 366
_OFFSET = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_BODY_ERROR = "invalid_reminder"

_ADDRESS: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
_TIME: Schema = {"type": "string", "minLength": 1, "maxLength": 64, "description": "ISO 8601 with its offset"}
BODY: Schema = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {"oneOf": [_ADDRESS, {"type": "array", "items": _ADDRESS, "minItems": 1, "maxItems": MAX_RECIPIENTS}]},
        "template": {"type": "string", "minLength": 1, "maxLength": 512},
        "language": {"type": "string", "minLength": 2, "maxLength": 35},
        "parameters": PARAMETERS,
        "message": {"type": "object", "description": "a canonical message body without 'to' (free text)"},
        "provider": {"type": "string", "minLength": 1, "maxLength": 64},
        "at": _TIME,
        "before": {
            "type": "object",
            "required": ["event_at", "offset"],
            "additionalProperties": False,
            "properties": {
                "event_at": _TIME,
                "offset": {
                    "type": "string",
                    "pattern": "^(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?$",
                    "minLength": 2,
                    "maxLength": 16,
                    "description": f"at most {MAX_OFFSET_DAYS} days",
                },
            },
        },
        "cron": {"type": "string", "minLength": 1, "maxLength": 128, "description": "five fields, read in timezone"},
        "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
    },
}

REMINDER: Schema = {
    "type": "object",
    "required": [
        "id",
        "name",
        "source",
        "state",
        "next_fire_at",
        "fired",
        "skipped",
        "notifications",
        "notifications_count",
    ],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string", "description": "api:<id>, or config:<name>[@<zone>] for a configured one"},
        "source": {"enum": ["api", "config"]},
        "state": {"enum": ["active", "done", "cancelled"]},
        "provider": {"type": "string"},
        "audience": {"type": "object"},
        "template": {"type": ["string", "null"]},
        "language": {"type": ["string", "null"]},
        "message": {"type": ["object", "null"]},
        "parameters": {"type": ["object", "null"]},
        "cron": {"type": ["string", "null"]},
        "timezone": {"type": ["string", "null"]},
        "event_at": MAYBE_TIME,
        "next_fire_at": MAYBE_TIME,
        "last_fired_at": MAYBE_TIME,
        "fired": {"type": "integer"},
        "skipped": {"type": "integer"},
        "misfire_grace": {"type": "number"},
        "notifications": {
            "type": "array",
            "items": {"type": "integer"},
            "maxItems": LATEST_NOTIFICATIONS,
            "description": f"the latest {LATEST_NOTIFICATIONS} firings' campaigns, newest first",
        },
        "notifications_count": {"type": "integer", "description": "every campaign its firings created"},
        "created_at": TIME,
    },
}


class _Refused(Exception):
    """A reminder that cannot be made: ``field`` is the JSON path of the cause."""

    def __init__(self, field: str, message: str, code: str = _BODY_ERROR) -> None:
        super().__init__(message)
        self.field, self.message, self.code = field, message, code


def shown(row: dict[str, Any], notifications: Notifications) -> dict[str, Any]:
    """A schedule row as the API shows it."""
    keys = ("id", "name", "source", "state", "provider", "audience", "template", "language", "message")
    return {
        **{key: row[key] for key in keys},
        **{key: row[key] for key in ("parameters", "cron", "timezone", "fired", "skipped", "misfire_grace")},
        "event_at": row["event_at"],
        "next_fire_at": row["next_fire_at"],
        "last_fired_at": row["last_fired_at"],
        "notifications": notifications.latest,
        "notifications_count": notifications.count,
        "created_at": row["created_at"],
    }


def _instant(text: str, field: str) -> float:
    try:
        return aware_time(text)
    except ValueError as exc:
        raise _Refused(field, f"{field}: {exc}") from None


def _offset_seconds(text: str) -> float:
    found = _OFFSET.fullmatch(text)
    assert found is not None  # the body's schema checked the shape and the length
    days, hours, minutes = (int(part or 0) for part in found.groups())
    seconds = days * 86400 + hours * 3600 + minutes * 60
    if seconds > MAX_OFFSET_DAYS * 86400:
        raise _Refused("$.before.offset", f"$.before.offset: {text} is over {MAX_OFFSET_DAYS} days")
    return float(seconds)


def _when(body: dict[str, Any], now: float) -> tuple[float, dict[str, Any]]:
    """The first firing and the columns saying when: ``at``, ``before`` or ``cron``."""
    given = [key for key in ("at", "before", "cron") if key in body]
    if len(given) != 1:
        raise _Refused("$", "$: give exactly one of at, before or cron (with timezone)")
    if ("timezone" in body) != ("cron" in body):
        raise _Refused("$.timezone", "$.timezone: a cron reminder needs its timezone, and only a cron reminder has one")
    if "cron" in body:
        try:
            cron = parse(body["cron"])
            zone = timezone_name(body["timezone"])
        except CronError as exc:
            raise _Refused("$.cron", f"$.cron: {exc}") from None
        except vol.Invalid as exc:
            raise _Refused("$.timezone", f"$.timezone: {exc.msg}") from None
        return next_after(cron, now, ZoneInfo(zone)), {"cron": body["cron"], "timezone": zone}
    if "at" in body:
        at = _instant(body["at"], "$.at")
        if at <= now:
            raise _Refused("$.at", f"$.at: {body['at'][:40]} is in the past: a reminder fires in the future")
        return at, {}
    event_at = _instant(body["before"]["event_at"], "$.before.event_at")
    fire_at = event_at - _offset_seconds(body["before"]["offset"])
    if fire_at <= now:
        raise _Refused(
            "$.before", f"$.before: {iso_time(max(fire_at, 0.0))} ({body['before']['offset']} before the event) is past"
        )
    return fire_at, {"event_at": event_at}


def _content(body: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    """What it sends: a template with its language and parameters, or a message."""
    if ("template" in body) == ("message" in body):
        raise _Refused("$.template", "$.template: give a template or a message, not both and not neither")
    if "message" in body:
        for key in ("language", "parameters"):
            if key in body:
                raise _Refused(f"$.{key}", f"$.{key}: only a template takes a {key}")
        try:
            parse_message({**body["message"], "to": addresses[0]})
        except InvalidMessage as exc:
            inner = exc.field.removeprefix("$").removeprefix(".")
            field = f"$.message.{inner}" if inner else "$.message"
            raise _Refused(field, f"{field}: {exc.message}") from None
        return {"message": body["message"]}
    language = None
    if "language" in body:
        try:
            language = language_code(body["language"])
        except vol.Invalid as exc:
            raise _Refused("$.language", f"$.language: {exc.msg}") from None
    return {"template": body["template"], "language": language, "parameters": body.get("parameters")}


def _spec(hub: Hub, body: dict[str, Any], now: float) -> tuple[ScheduleSpec, float]:
    addresses = [body["to"]] if isinstance(body["to"], str) else list(dict.fromkeys(body["to"]))
    try:
        provider = hub.provider(body.get("provider")).name
    except SendRefused as exc:
        raise _Refused("$.provider", f"$.provider: {exc}", exc.reason) from None
    content = _content(body, addresses)
    fire_at, when = _when(body, now)
    spec = ScheduleSpec(provider=provider, audience={"to": addresses}, misfire_grace=MISFIRE_GRACE, **content, **when)
    return spec, fire_at


async def _answer(hub: Hub, row: dict[str, Any], status: int = 200, **extra: Any) -> web.Response:
    notifications = await hub.storage.schedules.notifications([row["id"]])
    return json_response({**shown(row, notifications[row["id"]]), **extra}, status=status)


async def create_reminder(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    now = hub.clock.time()
    try:
        key = idempotency_key(request)
        spec, fire_at = _spec(hub, body_of(request), now)
    except _Refused as exc:
        status = 400 if exc.code == "invalid_idempotency_key" else 422
        return error(status, exc.code, exc.message, field=exc.field)
    row, created = await hub.storage.schedules.create_api(spec, next_fire_at=fire_at, now=now, idempotency_key=key)
    return await _answer(hub, row, 201 if created else 200)


async def list_reminders(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ("limit", "after"))
    rows, next_after_id = await hub.storage.schedules.page(after=cursor(request, "after"), limit=page_limit(request))
    notifications = await hub.storage.schedules.notifications([row["id"] for row in rows])
    items = [shown(row, notifications[row["id"]]) for row in rows]
    return json_response({"reminders": items, "next": next_after_id})


async def get_reminder(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    schedule_id = path_id(request, what="reminder")
    check_known(request, ())
    row = await hub.storage.schedules.get(schedule_id)
    if row is None:
        return error(404, "not_found", f"no reminder {schedule_id}")
    return await _answer(hub, row)


async def cancel_reminder(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    schedule_id = path_id(request, what="reminder")
    row = await hub.storage.schedules.get(schedule_id)
    if row is None:
        return error(404, "not_found", f"no reminder {schedule_id}")
    if row["source"] == CONFIG:
        configured = row["name"].removeprefix("config:").split("@")[0]
        return error(
            409,
            "configured_reminder",
            f"reminder {schedule_id} ({row['name']}) comes from the configuration: "
            f"remove or change reminders: {configured} there",
        )
    now = hub.clock.time()
    cancelled = await hub.storage.schedules.cancel(schedule_id, now=now)
    assert cancelled is not None
    stopped = await hub.storage.schedules.unfinished_notifications(schedule_id)
    for campaign_id in stopped:
        await hub.storage.campaigns.cancel(campaign_id, now=now)
    return await _answer(hub, cancelled, cancelled_notifications=stopped)


_ID = Param("id", {"type": "integer", "minimum": 1}, "The reminder's id", where="path", required=True)
_ONE = {200: Answer("The reminder", REMINDER)}
_CANCELLED: Schema = {
    **REMINDER,
    "required": [*REMINDER["required"], "cancelled_notifications"],
    "properties": {
        **REMINDER["properties"],
        "cancelled_notifications": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "its notifications that were still waiting, being written or queued, now cancelled",
        },
    },
}
_PAGE: Schema = {
    "type": "object",
    "required": ["reminders", "next"],
    "properties": {"reminders": {"type": "array", "items": REMINDER}, "next": {"type": ["integer", "null"]}},
}


def operations() -> list[Operation]:
    tag = "reminders"
    return [
        Operation(
            "post",
            "/api/v1/reminders",
            create_reminder,
            "Schedule a reminder",
            tag,
            {201: Answer("The reminder, created", REMINDER), **_ONE, **errors(400, 401, 422)},
            description="Fires at `at`, `before.offset` before `before.event_at`, or on `cron` in `timezone`.",
            body=BODY,
            body_error=_BODY_ERROR,
            params=[IDEMPOTENCY_KEY],
        ),
        Operation(
            "get",
            "/api/v1/reminders",
            list_reminders,
            "List reminders",
            tag,
            {200: Answer("A page of reminders, by id", _PAGE), **errors(400, 401)},
            params=[
                PAGE_LIMIT,
                PAGE_AFTER,
            ],
        ),
        Operation(
            "get",
            "/api/v1/reminders/{id}",
            get_reminder,
            "Get a reminder",
            tag,
            {**_ONE, **errors(401, 404)},
            params=[_ID],
        ),
        Operation(
            "delete",
            "/api/v1/reminders/{id}",
            cancel_reminder,
            "Cancel a reminder",
            tag,
            {
                200: Answer("The reminder, cancelled, and the notifications it stopped", _CANCELLED),
                **errors(401, 404),
                409: Answer("The reminder is configured: change the configuration instead", errors(409)[409].schema),
            },
            params=[_ID],
        ),
    ]
