"""The REST API's endpoints about a contact by provider and address:

- ``GET|POST /api/v1/contacts/{provider}/{address}/consent``: the consent
  ledger and current state; record an opt-in or opt-out with its evidence.
- ``PATCH /api/v1/contacts/{provider}/{address}``: set the contact's time zone.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from wahub.core.config.validators import timezone_name
from wahub.core.errors import InvalidTime
from wahub.core.http.api_io import abort as _abort
from wahub.core.http.api_io import error, json_response, path_text
from wahub.core.http.api_schemas import CONSENT_EVENT, CONSENT_STATE, MAYBE_TEXT, TEXT, Schema, obj
from wahub.core.http.openapi import Answer, Operation, Param, body_of, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.policy.consent import consent_time
from wahub.core.storage.policy import consent_state

MAX_EVIDENCE_BYTES = 16 * 1024


def _contact(request: web.Request) -> tuple[Hub, str, str]:
    hub = request.app[HUB_KEY]
    provider = request.match_info["provider"]
    if provider not in hub.providers:
        raise _abort(web.HTTPNotFound, "unknown_provider", f"no provider named {provider[:64]!r}")
    return hub, provider, path_text(request, "address")


async def get_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    # One read, so the state always matches the events shown beside it.
    ledger = await hub.storage.policy.ledger(provider, address)
    state = consent_state(ledger)
    for event in ledger:
        event.pop("id", None)
    return json_response({"state": {"all": state.all, "marketing": state.marketing}, "events": ledger})


async def record_consent(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    body = body_of(request)
    if len(json.dumps(body["evidence"])) > MAX_EVIDENCE_BYTES:
        return error(422, "invalid_consent", f"evidence is over {MAX_EVIDENCE_BYTES} bytes of JSON")
    try:
        occurred_at = consent_time(body.get("occurred_at", time.time()))
    except InvalidTime as exc:
        return error(422, "invalid_consent", str(exc))
    await hub.storage.policy.record_consent(
        provider,
        address,
        action=body["action"],
        scope=body.get("scope", "all"),
        source="api",
        evidence=body["evidence"],
        occurred_at=occurred_at,
    )
    hub.metrics.consent_changes.labels(provider, body["action"], "api").inc()
    return await get_consent(request)


async def update_contact(request: web.Request) -> web.Response:
    hub, provider, address = _contact(request)
    zone = body_of(request)["timezone"]
    if zone is not None:
        try:
            zone = timezone_name(zone)
        except Exception as exc:  # noqa: BLE001 - voluptuous.Invalid, reported to the client
            return error(422, "invalid_contact", str(exc))
    if not await hub.storage.policy.set_timezone(provider, address, zone):
        return error(404, "not_found", f"no contact {address} on {provider}")
    return json_response({"provider": provider, "address": address, "timezone": zone})


_CONTACT_PATH = "/api/v1/contacts/{provider}/{address}"
_PROVIDER = Param(
    "provider", {"type": "string", "minLength": 1}, "The provider's name in the config", where="path", example="sandbox"
)
_ADDRESS = Param(
    "address",
    {"type": "string", "minLength": 1, "maxLength": 128},
    "The contact's address on that provider: phone number, wa_id or BSUID",
    where="path",
    example="15551234567",
)


CONSENT_BODY: Schema = {
    "type": "object",
    "required": ["action", "evidence"],
    "examples": [
        {"action": "opt_in", "scope": "marketing", "evidence": {"form": "signup", "checkbox": "News by WhatsApp"}}
    ],
    "properties": {
        "action": {"enum": ["opt_in", "opt_out"]},
        "scope": {"enum": ["all", "marketing"], "default": "all"},
        "evidence": {"type": "object", "description": "How the consent was given: form, checkbox text, URL, ..."},
        "occurred_at": {
            "type": ["number", "string"],
            "description": "When it was given: unix seconds or ISO 8601, from 2009 to one day from now (default: now)",
        },
    },
    "additionalProperties": False,
}

CONSENT: Schema = obj(["state", "events"], state=CONSENT_STATE, events={"type": "array", "items": CONSENT_EVENT})


def operations() -> list[Operation]:
    return [
        Operation(
            "GET",
            f"{_CONTACT_PATH}/consent",
            get_consent,
            "A contact's consent state and ledger",
            "consent",
            {200: Answer("The state and every event, oldest first", CONSENT), **errors(401, 404)},
            params=[_PROVIDER, _ADDRESS],
        ),
        Operation(
            "POST",
            f"{_CONTACT_PATH}/consent",
            record_consent,
            "Record an opt-in or an opt-out with its evidence",
            "consent",
            {200: Answer("The state and ledger after it", CONSENT), **errors(400, 401, 404, 413, 422)},
            body=CONSENT_BODY,
            body_error="invalid_consent",
            params=[_PROVIDER, _ADDRESS],
        ),
        Operation(
            "PATCH",
            _CONTACT_PATH,
            update_contact,
            "Set a contact's time zone",
            "contacts",
            {
                200: Answer(
                    "The contact's new time zone",
                    obj(["provider", "address", "timezone"], provider=TEXT, address=TEXT, timezone=MAYBE_TEXT),
                ),
                **errors(400, 401, 404, 413, 422),
            },
            body={
                "type": "object",
                "required": ["timezone"],
                "properties": {"timezone": {"type": ["string", "null"], "description": "IANA name; null: the default"}},
                "additionalProperties": False,
            },
            body_error="invalid_contact",
            params=[_PROVIDER, _ADDRESS],
            operation_id="set_contact_timezone",
        ),
    ]
