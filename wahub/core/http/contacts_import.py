"""Importing contacts from a list: ``POST /api/v1/contacts/import``.

The body is CSV (``Content-Type: text/csv``, a header row naming the columns)
or JSON (an array of objects with the same keys). Columns: ``phone``
(required), ``name``, ``language`` (BCP 47 or Meta's ``pt_BR``), ``tags``
(CSV: separated by ``;`` or ``|``; JSON: a list), ``timezone`` (IANA),
``opt_in_source`` and ``opt_in_evidence`` (JSON: an object or a text). A CSV
column that is not one of them refuses the whole file, naming it.

Phone numbers are read with ``phonenumbers`` and kept as WhatsApp's address:
the international number's digits, without ``+``. ``?region=PT`` is the
country of numbers written without one (``912 345 678``); ``+351 ...`` and
``00351 ...`` (with a region whose international prefix is 00) need none.

Each row is checked on its own: a bad one is reported with its line (CSV: the
file's line, the header being line 1; JSON: the index in the array, from 0)
and what is wrong, and the good ones are kept. Rows of the same number are
one contact, applied in order. An empty value leaves a field as it is; tags
are added to those the contact has; a language set here is kept over
detection. An ``opt_in_source`` records an opt-in (scope ``all``, source
``import``) once, however often the same file is imported.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import phonenumbers
import voluptuous as vol
from aiohttp import web

from wahub.core.config.validators import language_code, timezone_name
from wahub.core.errors import SendRefused
from wahub.core.http.api_io import error, json_body, json_response, storable
from wahub.core.http.api_query import check_known, refuse, single
from wahub.core.http.contacts import MAX_NAME, MAX_TAG, MAX_TAGS
from wahub.core.http.openapi import ERROR_SCHEMA, Answer, Operation, Param, errors
from wahub.core.hub import HUB_KEY
from wahub.core.storage.contacts import ImportedContact

#: Most rows one import may have; the server's body limit (4 MiB) applies too.
MAX_ROWS = 50_000
#: Largest opt-in source label, and largest opt-in evidence of a row, as JSON.
MAX_SOURCE, MAX_EVIDENCE_BYTES = 64, 4096
COLUMNS = ("phone", "name", "language", "tags", "timezone", "opt_in_source", "opt_in_evidence")
_TAG_SEPARATOR = re.compile(r"[;|]")


class RowProblem(Exception):
    """What is wrong with one row; the row is reported and skipped."""


class ImportRefused(Exception):
    """What is wrong with the whole body; nothing is imported."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# -- reading the body ------------------------------------------------------------


def csv_rows(text: str) -> list[tuple[int, dict[str | None, Any]]]:
    """Each data row of a CSV file with the line it starts on, by column name;
    values beyond the header's columns are kept under None, as ``csv.DictReader`` does."""
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, dict[str | None, Any]]] = []
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        _check_header(header)
        line = reader.line_num + 1
        for values in reader:
            if any(value.strip() for value in values):
                _check_count(len(rows) + 1)
                fields: dict[str | None, Any] = dict(zip(header, values, strict=False))
                if len(values) > len(header):
                    fields[None] = values[len(header) :]
                rows.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportRefused(400, "invalid_import", f"line {reader.line_num}: the CSV cannot be read: {exc}") from None
    return rows


def _check_header(header: list[str]) -> None:
    if not any(header):
        raise ImportRefused(
            422, "invalid_import", f"the CSV needs a header row naming its columns ({', '.join(COLUMNS)})"
        )
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        names = ", ".join(repr(name[:40]) if name else "with no name" for name in unknown)
        raise ImportRefused(422, "invalid_import", f"unknown column {names}: the columns are {', '.join(COLUMNS)}")
    repeated = next((name for index, name in enumerate(header) if name in header[:index]), None)
    if repeated is not None:
        raise ImportRefused(422, "invalid_import", f"the column {repeated!r} is in the header twice")
    if "phone" not in header:
        raise ImportRefused(422, "invalid_import", "the CSV has no phone column")


def _check_count(count: int) -> None:
    if count > MAX_ROWS:
        raise ImportRefused(413, "too_many_rows", f"an import has at most {MAX_ROWS} rows: split the file")


def json_rows(value: Any) -> list[tuple[int, Any]]:
    """Each item of a JSON array with its index."""
    if not isinstance(value, list):
        raise ImportRefused(422, "invalid_import", "the JSON body must be an array of contacts")
    _check_count(len(value))
    return list(enumerate(value))


# -- checking a row --------------------------------------------------------------


def phone_address(raw: str, region: str | None) -> str:
    """The digits WhatsApp addresses the number by (``+351 912 345 678`` -> ``351912345678``)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        hint = "" if region else " (write it with + and its country code, or give ?region=)"
        raise RowProblem(f"phone {raw[:40]!r} is not a phone number{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise RowProblem(f"phone {raw[:40]!r} is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).removeprefix("+")


def _text(fields: Mapping[str, Any], key: str, limit: int) -> str | None:
    """A field's text, stripped; None when absent or empty."""
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowProblem(f"{key} must be a text, not {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or not value.isprintable() or not storable(value):
        raise RowProblem(f"{key} must be at most {limit} printable characters (no line breaks or control characters)")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = _TAG_SEPARATOR.split(value)
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise RowProblem("tags must be a list of labels (in CSV: separated by ; or |)")
    tags = list(dict.fromkeys(tag.strip() for tag in value if tag.strip()))
    if len(tags) > MAX_TAGS:
        raise RowProblem(f"has {len(tags)} tags; at most {MAX_TAGS}")
    for tag in tags:
        if len(tag) > MAX_TAG or not tag.isprintable() or not storable(tag):
            raise RowProblem(f"tag {tag[:40]!r} must be at most {MAX_TAG} printable characters")
    return tuple(tags)


def _language(fields: Mapping[str, Any]) -> str | None:
    given = _text(fields, "language", 64)
    try:
        return None if given is None else language_code(given)
    except vol.Invalid as exc:
        raise RowProblem(f"unknown language {given!r}: {exc.msg}") from None


def _timezone(fields: Mapping[str, Any]) -> str | None:
    given = _text(fields, "timezone", 64)
    try:
        return None if given is None else timezone_name(given)
    except vol.Invalid as exc:
        raise RowProblem(exc.msg) from None


def _opt_in(fields: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    source = _text(fields, "opt_in_source", MAX_SOURCE)
    given = fields.get("opt_in_evidence")
    if isinstance(given, str):
        given = given.strip() or None
    if given is None:
        return () if source is None else ({"opt_in_source": source},)
    if source is None:
        raise RowProblem("opt_in_evidence needs an opt_in_source saying how the contact opted in")
    if not isinstance(given, (str, dict)):
        raise RowProblem(f"opt_in_evidence must be an object or a text, not {type(given).__name__}")
    if isinstance(given, str) and not storable(given):
        raise RowProblem("opt_in_evidence may not contain U+0000")
    if len(json.dumps(given)) > MAX_EVIDENCE_BYTES:
        raise RowProblem(f"opt_in_evidence is over {MAX_EVIDENCE_BYTES} bytes of JSON")
    return ({"opt_in_source": source, "opt_in_evidence": given},)


def imported_contact(fields: Any, region: str | None) -> ImportedContact:
    """One row (a CSV row by column, or a JSON item) as a contact to import, or ``RowProblem``."""
    if not isinstance(fields, dict):
        raise RowProblem(f"must be an object with {', '.join(COLUMNS)}")
    if None in fields:
        raise RowProblem(f"has {len(fields) - 1 + len(fields[None])} values; the header has {len(fields) - 1} columns")
    unknown = [str(key)[:40] for key in fields if key not in COLUMNS]
    if unknown:
        raise RowProblem(f"unknown key {', '.join(map(repr, unknown))}: the keys are {', '.join(COLUMNS)}")
    phone = _text(fields, "phone", 64)
    if phone is None:
        raise RowProblem("phone is missing")
    return ImportedContact(
        phone=phone_address(phone, region),
        name=_text(fields, "name", MAX_NAME),
        language=_language(fields),
        tags=_tags(fields.get("tags")),
        timezone=_timezone(fields),
        opt_ins=_opt_in(fields),
    )


def merged(contacts: list[ImportedContact]) -> list[ImportedContact]:
    """One contact per number, its rows applied in order: later values win, tags and opt-ins add up."""
    by_phone: dict[str, ImportedContact] = {}
    for contact in contacts:
        earlier = by_phone.get(contact.phone)
        if earlier is None:
            by_phone[contact.phone] = contact
            continue
        by_phone[contact.phone] = replace(
            earlier,
            name=contact.name or earlier.name,
            language=contact.language or earlier.language,
            timezone=contact.timezone or earlier.timezone,
            tags=tuple(dict.fromkeys((*earlier.tags, *contact.tags))),
            opt_ins=(*earlier.opt_ins, *(opt_in for opt_in in contact.opt_ins if opt_in not in earlier.opt_ins)),
        )
    return list(by_phone.values())


# -- the endpoint ----------------------------------------------------------------


def _region(request: web.Request) -> str | None:
    region = single(request, "region")
    if region is None:
        return None
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise refuse("invalid_region", "region", f"region {region[:8]!r} is not a country code such as PT or BR")
    return region.upper()


async def _rows(request: web.Request) -> list[tuple[int, Any]]:
    if request.content_type == "application/json":
        return json_rows(await json_body(request))
    if request.content_type != "text/csv":
        raise ImportRefused(415, "unsupported_media_type", "send the contacts as text/csv or application/json")
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ImportRefused(413, "body_too_large", f"the body is over {request.client_max_size} bytes") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(
            400, "invalid_import", f"the CSV is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    return csv_rows(text)


async def import_contacts(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ("provider", "region"))
    region = _region(request)
    try:
        provider = hub.provider(single(request, "provider")).name
    except SendRefused as exc:
        return error(404, exc.reason, str(exc))
    try:
        rows = await _rows(request)
    except ImportRefused as exc:
        return error(exc.status, exc.code, str(exc))
    contacts: list[ImportedContact] = []
    rejected: list[dict[str, Any]] = []
    for line, fields in rows:
        try:
            contacts.append(imported_contact(fields, region))
        except RowProblem as exc:
            rejected.append({"line": line, "error": str(exc)})
    counts = await hub.storage.contacts.import_contacts(provider, merged(contacts), now=hub.clock.time())
    if counts.opted_in:
        hub.metrics.consent_changes.labels(provider, "opt_in", "import").inc(counts.opted_in)
    answer = {"received": len(rows), "created": counts.created, "updated": counts.updated}
    return json_response({**answer, "opted_in": counts.opted_in, "rejected": rejected})


_ROW = {
    "type": "object",
    "properties": {
        "phone": {"type": "string", "description": "+351912345678, 00351..., or 912345678 with ?region=PT"},
        "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
        "language": {"type": ["string", "null"], "description": "BCP 47 (pt-BR) or Meta's pt_BR"},
        "tags": {"type": ["array", "null"], "items": {"type": "string", "maxLength": MAX_TAG}, "maxItems": MAX_TAGS},
        "timezone": {"type": ["string", "null"], "description": "IANA, such as Europe/Lisbon"},
        "opt_in_source": {"type": ["string", "null"], "maxLength": MAX_SOURCE},
        "opt_in_evidence": {"type": ["object", "string", "null"]},
    },
}
_RESULT = {
    "type": "object",
    "required": ["received", "created", "updated", "opted_in", "rejected"],
    "properties": {
        "received": {"type": "integer", "description": "Rows in the body"},
        "created": {"type": "integer", "description": "Contacts new to wahub"},
        "updated": {"type": "integer", "description": "Contacts already known, updated"},
        "opted_in": {"type": "integer", "description": "Opt-ins recorded (none for one recorded before)"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["line", "error"],
                "properties": {"line": {"type": "integer"}, "error": {"type": "string"}},
            },
        },
    },
}


def operations() -> list[Operation]:
    example = "phone,name,language,tags,timezone,opt_in_source\n+351 912 345 678,Ana,pt-PT,vip;lisbon,,shop form\n"
    return [
        Operation(
            "POST",
            "/api/v1/contacts/import",
            import_contacts,
            "Import contacts from CSV or JSON",
            "contacts",
            {
                200: Answer("What was imported, and each rejected row with its line and why", _RESULT),
                **errors(400, 401, 404, 413, 422),
                415: Answer("The body is neither text/csv nor application/json", ERROR_SCHEMA),
            },
            description=(
                f"At most {MAX_ROWS} rows and the server's body limit. Bad rows are reported and skipped;"
                " good ones create or update contacts (tags are added to theirs) and record opt-ins once."
            ),
            params=[
                Param("provider", {"type": "string"}, "The provider the contacts are for (default: the first)"),
                Param(
                    "region",
                    {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                    "The country (ISO 3166) of numbers written without a country code",
                ),
            ],
            other_body={
                "text/csv": {"schema": {"type": "string"}, "example": example},
                "application/json": {"schema": {"type": "array", "maxItems": MAX_ROWS, "items": _ROW}},
            },
        )
    ]
