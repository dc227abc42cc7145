"""Validation of send bodies against Meta's OpenAPI document, for the fake Graph
API (``fake_graph``).

``validate_message(body)`` checks a send body against ``components.schemas.Message``
of ``specs/meta/business-messaging-api_v23.0.yaml`` (JSON Schema 2020-12), read as
its authors intend:

(a) Each message type is ``allOf: [BaseMessageProperties, {additionalProperties: false,
    properties: {type, text...}}]``. Read literally, the inner ``additionalProperties:
    false`` forbids the base properties (``to``...) and no body could pass. So, in a copy,
    it is dropped from the ``allOf`` member and the schema holding the ``allOf`` gets
    ``unevaluatedProperties: false``: unknown fields still fail.
(b) ``recipient`` (the 2026 business-scoped user id, absent from v23) is validated as ``to``.
(c) The named, minimal ``AMENDMENTS`` (name → reason), where the document refuses what
    Meta accepts (mostly its own examples) or lacks a documented limit;
    ``validate_message(body, amended=False)`` leaves them out.

Its ``discriminator`` keywords are no JSON Schema: the one of ``Message`` only picks the
message type to report errors for; those of ``TemplateComponent`` and ``ParameterObject``
(with no ``oneOf``) check nothing, so template parameters are not checked.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from wahub.testing.contract_format import Recorded

SPEC_PATH = Path(__file__).parent / "specs" / "meta" / "business-messaging-api_v23.0.yaml"
_SPEC_URI = "urn:wahub:meta:business-messaging-api:v23.0"

AMENDMENTS: dict[str, str] = {
    "optional_recipient_type": "BaseMessageProperties.required lists recipient_type, which defaults to "
    "'individual' (reference 2.1); the document's examples 'Send Test Message' and 'Send Text Message "
    "with Preview URL' omit it.",
    "biz_opaque_callback_data": "BaseMessageProperties lacks biz_opaque_callback_data (a string of at most "
    "512 characters echoed in status webhooks, reference 2.1), so (a) refuses it.",
    "text_body_limit": "A tightening: TextMessage.text has no required body and no maxLength; Meta needs a "
    "body of at most 4096 characters (reference 2.6).",
    "numeric_coordinates": "LocationMessage.location.latitude/longitude are typed string; the document's "
    "example 'Send Location Message' and reference 2.2 send numbers.",
    "cta_url": "InteractiveObject.type and ActionObject lack the call-to-action URL button (reference 2.2: "
    "type cta_url, action {name: cta_url, parameters: {display_text of at most 20 characters, url}}).",
    "optional_language_policy": "LanguageObject.required lists policy, which is optional (reference 2.3); "
    "the document's examples 'Send Test Message' and 'Send Message Template Text' omit it.",
    "template_button_index": "TemplateComponent.index has the pattern ^[2-6, 11-14]$ (a character class "
    "that refuses '0' and '10') and type string; buttons are indexed 0-9 as a string or a number "
    "(reference 2.3; the document's examples send '0' and 0).",
    "template_button_sub_types": "TemplateComponent.sub_type allows quick_reply, url and catalog; copy_code "
    "and flow buttons exist (reference 2.3; the document's example 'Send Flow Template Message' sends flow).",
}
_CTA_URL_ACTION = {
    "required": ["name", "parameters"],
    "properties": {
        "name": {"const": "cta_url"},
        "parameters": {
            "type": "object",
            "required": ["display_text", "url"],
            "properties": {"display_text": {"type": "string", "maxLength": 20}, "url": {"type": "string"}},
        },
    },
}
_BIZ_OPAQUE = {"type": "string", "maxLength": 512}
_BUTTON_INDEX = {"type": ["string", "integer"], "pattern": "^[0-9]$", "minimum": 0, "maximum": 9}
_LOCATION = "LocationMessage/allOf/1/properties/location/properties"
#: How each amendment changes components.schemas: (amendment, path, key, "=" to set or "+=" to extend, value).
_PATCHES: list[tuple[str, str, str, str, Any]] = [
    ("optional_recipient_type", "BaseMessageProperties", "required", "=", ["messaging_product", "to", "type"]),
    ("biz_opaque_callback_data", "BaseMessageProperties/properties", "biz_opaque_callback_data", "=", _BIZ_OPAQUE),
    ("text_body_limit", "TextMessage/allOf/1/properties/text", "required", "=", ["body"]),
    ("text_body_limit", "TextMessage/allOf/1/properties/text/properties/body", "maxLength", "=", 4096),
    ("numeric_coordinates", f"{_LOCATION}/latitude", "type", "=", ["number", "string"]),
    ("numeric_coordinates", f"{_LOCATION}/longitude", "type", "=", ["number", "string"]),
    ("cta_url", "InteractiveObject/properties/type", "enum", "+=", ["cta_url"]),
    ("cta_url", "ActionObject", "oneOf", "+=", [_CTA_URL_ACTION]),
    ("optional_language_policy", "LanguageObject", "required", "=", ["code"]),
    ("template_button_index", "TemplateComponent/properties", "index", "=", _BUTTON_INDEX),
    ("template_button_sub_types", "TemplateComponent/properties/sub_type", "enum", "+=", ["copy_code", "flow"]),
]


def _close_all_ofs(node: Any) -> None:
    """Adjustment (a) of the module docstring, in place."""
    if isinstance(node, dict):
        closing = [m for m in node.get("allOf", []) if isinstance(m, dict) and m.get("additionalProperties") is False]
        for member in closing:
            del member["additionalProperties"]
        if closing:
            node["unevaluatedProperties"] = False
    for value in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        _close_all_ofs(value)


@functools.cache
def spec_document() -> dict[str, Any]:
    with SPEC_PATH.open("rb") as file:
        document: dict[str, Any] = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return document


@functools.cache
def schema_validator(schema: str, amended: bool) -> Any:
    document = copy.deepcopy(spec_document())
    schemas = document["components"]["schemas"]
    _close_all_ofs(schemas)
    for _name, path, key, operation, value in _PATCHES if amended else ():
        node = functools.reduce(lambda n, k: n[int(k)] if isinstance(n, list) else n[k], path.split("/"), schemas)
        node[key] = node[key] + copy.deepcopy(value) if operation == "+=" else copy.deepcopy(value)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema}"}, registry=registry)


def _flatten(errors: list[ValidationError]) -> list[ValidationError]:
    """Replace each failed ``oneOf``/``anyOf`` by the errors of the one branch that fits
    best, if one does: no enum/const miss (it is the intended kind), then the deepest
    errors (a too long button title rather than "matches none of the allowed shapes")."""
    flat: list[ValidationError] = []
    for error in errors:
        if error.validator in ("oneOf", "anyOf") and error.context:
            branches: dict[Any, list[ValidationError]] = {}
            for sub in error.context:
                branches.setdefault(sub.relative_schema_path[0], []).append(sub)
            scores = {
                key: (all(e.validator not in ("enum", "const") for e in group), max(len(e.path) for e in group))
                for key, group in branches.items()
            }
            winners = [key for key, score in scores.items() if score == max(scores.values())]
            if len(winners) == 1 and (scores[winners[0]][0] or scores[winners[0]][1] > 0):
                flat += _flatten(branches[winners[0]])
                continue
        flat.append(error)
    return flat


def describe_errors(errors: list[ValidationError]) -> list[str]:
    """One readable line per error: JSON path, then message."""
    errors, lines = _flatten(errors), []
    for error in errors:
        where = tuple(error.absolute_path)
        if error.validator == "unevaluatedProperties" and any(
            other is not error and tuple(other.absolute_path)[: len(where)] == where for other in errors
        ):
            continue  # a failing allOf drops its annotations, so every property looks unknown: noise
        message = error.message
        if error.validator in ("oneOf", "anyOf") and not error.context:
            message = "matches more than one of the allowed shapes"
        elif error.validator in ("oneOf", "anyOf"):
            closest = best_match(error.context)
            message = f"matches none of the allowed shapes (e.g. {closest.json_path}: {closest.message})"
        elif len(shown := repr(error.instance)) > 80:
            message = message.replace(shown, f"{shown[:60]}... ({len(shown)} characters)")
        if (line := f"{error.json_path}: {message[:300]}") not in lines:
            lines.append(line)
    return lines


def validate_message(body: Any, *, amended: bool = True) -> list[str]:
    """What is wrong with a ``POST .../messages`` body (not a mark-as-read), one line per
    problem ("JSON path: message"); an empty list when Meta's document accepts it."""
    if not isinstance(body, dict):
        return ["$: the message must be a JSON object"]
    if "recipient" in body:
        if "to" in body:
            return ["$: 'to' and 'recipient' exclude each other"]
        body = {("to" if key == "recipient" else key): value for key, value in body.items()}
    message = spec_document()["components"]["schemas"]["Message"]
    mapping: dict[str, str] = message["discriminator"]["mapping"]
    errors: list[ValidationError] = []
    for error in schema_validator("Message", amended).iter_errors(body):
        if error.validator == "oneOf" and not error.absolute_path:  # the discriminator names the type's branch
            if "type" not in body:
                return [f"$: 'type' is a required property, one of {sorted(mapping)}"]
            if body["type"] not in mapping:
                return [f"$.type: {body['type']!r} is not one of {sorted(mapping)}"]
            branch = [b["$ref"] for b in message["oneOf"]].index(mapping[body["type"]])
            errors += [e for e in error.context if e.relative_schema_path[0] == branch] or [error]
        else:
            errors.append(error)
    return describe_errors(errors)


_READ_FIELDS = ("messaging_product", "status", "message_id", "typing_indicator", "recipient_type")


def read_problems(body: dict[str, Any]) -> list[str]:
    """What is wrong with a mark-as-read body (``"status": "read"``), one line per problem."""
    problems = [f"$: unknown field {key!r}" for key in body if key not in _READ_FIELDS]
    if body.get("messaging_product") != "whatsapp":
        problems.append("$.messaging_product: must be 'whatsapp'")
    if not isinstance(body.get("message_id"), str) or not body["message_id"]:
        problems.append("$.message_id: the id of the message to mark read is required")
    if body.get("typing_indicator", {"type": "text"}) != {"type": "text"}:
        problems.append("$.typing_indicator: must be {'type': 'text'}")
    return problems


def request_problems(request: Recorded) -> list[str]:
    """What Meta would refuse in a recorded ``POST .../messages`` body (a message
    or a mark-as-read), checked as the fake Graph API checks it; the contract
    suite's ``check_request`` for Meta."""
    if request.method != "POST" or not request.path.endswith("/messages"):
        return []
    body = request.json
    if isinstance(body, dict) and body.get("status") == "read":
        return read_problems(body)
    return validate_message(body)
