"""Importing contacts over real HTTP, on SQLite and PostgreSQL: CSV and JSON
with good and bad rows (each bad one reported with its line), numbers as
people write them made one WhatsApp address, contacts created or updated,
and opt-ins recorded once however often a file is imported."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.core.api_client import Api, running_api
from tests.helpers import AUTH
from wahub.core.http.contacts_import import MAX_ROWS

ANA = "351912345678"
COLUMNS = "phone, name, language, tags, timezone, opt_in_source, opt_in_evidence"
PATH = "/api/v1/contacts/import"

CSV = (
    "Phone,name,language,tags,timezone,opt_in_source,opt_in_evidence\r\n"
    '+351 912 345 678,Ana Souza,pt_PT,vip;lisbon,Europe/Lisbon,shop form,"checkbox:\nsend me news"\r\n'
    '+55 11 91234-5678,"Lima, Bruno",pt-BR,vip | late payer,America/Sao_Paulo,,\r\n'
    "12345,Nobody,,,,,\r\n"
    "+34 612 345 678,Carla,english,,,,\r\n"
    "\r\n"
    "+44 7911 123456,Dee,,,Mars/Olympus,,\r\n"
    "+1 202 555 0143,Eve,en,,,,,extra\r\n"
    "+49 151 23456789,,,,,,collected at the fair\r\n"
)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with running_api(database_url) as running:
        yield running


async def _import(api: Api, body: Any, **params: str) -> tuple[int, Any]:
    if isinstance(body, str):
        data, content_type = body.encode(), "text/csv"
    else:
        data, content_type = json.dumps(body).encode(), "application/json"
    headers = {**AUTH, "Content-Type": content_type}
    async with api.http.post(f"{api.daemon.url}{PATH}", data=data, headers=headers, params=params) as response:
        return response.status, await response.json()


async def _contact(api: Api, phone: str) -> dict[str, Any]:
    [found] = (await api.ok("GET", "/api/v1/contacts", q=phone))["contacts"]
    contact: dict[str, Any] = await api.ok("GET", f"/api/v1/contacts/{found['id']}")
    return contact


async def test_a_csv_keeps_its_good_rows_and_reports_each_bad_one_by_line(api: Api) -> None:
    status, answer = await _import(api, CSV)

    assert status == 200, answer
    assert answer == {
        "received": 7,
        "created": 2,
        "updated": 0,
        "opted_in": 1,
        "rejected": [
            {
                "line": 5,
                "error": "phone '12345' is not a phone number (write it with + and its country code, or give ?region=)",
            },
            {"line": 6, "error": "unknown language 'english': expected a language code such as en or pt-BR"},
            {"line": 8, "error": "unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Berlin"},
            {"line": 9, "error": "has 8 values; the header has 7 columns"},
            {"line": 10, "error": "opt_in_evidence needs an opt_in_source saying how the contact opted in"},
        ],
    }
    ana = await _contact(api, ANA)
    assert (ana["provider"], ana["address"], ana["name"]) == ("sandbox", ANA, "Ana Souza")
    assert (ana["language"], ana["language_source"]) == ("pt-PT", "set")
    assert (ana["tags"], ana["timezone"]) == (["vip", "lisbon"], "Europe/Lisbon")
    assert ana["identities"] == [{"kind": "phone", "value": ANA}]
    assert ana["consent"] == {"all": "opt_in", "marketing": None}
    [event] = await api.daemon.hub.storage.policy.ledger("sandbox", ANA)
    assert (event["action"], event["scope"], event["source"]) == ("opt_in", "all", "import")
    assert event["evidence"] == {"opt_in_source": "shop form", "opt_in_evidence": "checkbox:\nsend me news"}

    bruno = await _contact(api, "5511912345678")
    assert (bruno["name"], bruno["language"], bruno["tags"]) == ("Lima, Bruno", "pt-BR", ["vip", "late payer"])
    assert bruno["consent"] == {"all": None, "marketing": None}


async def test_importing_the_same_file_again_records_each_opt_in_once(api: Api) -> None:
    await _import(api, CSV)

    status, again = await _import(api, CSV)

    assert status == 200
    assert (again["created"], again["updated"], again["opted_in"]) == (0, 2, 0)
    assert len(await api.daemon.hub.storage.policy.ledger("sandbox", ANA)) == 1
    # Other evidence for the same contact is another opt-in.
    other = "phone,opt_in_source,opt_in_evidence\n+351912345678,phone call,said yes on 3 May\n"
    assert (await _import(api, other))[1]["opted_in"] == 1
    assert len(await api.daemon.hub.storage.policy.ledger("sandbox", ANA)) == 2


async def test_one_number_written_three_ways_is_one_contact(api: Api) -> None:
    rows = [
        {"phone": "+351 912 345 678", "tags": ["a"]},
        {"phone": "00351912345678", "tags": ["b"], "name": "Ana"},
        {"phone": "912345678", "tags": ["a", "c"], "language": "pt"},
    ]
    status, answer = await _import(api, rows, region="PT")

    assert status == 200, answer
    assert (answer["received"], answer["created"], answer["updated"], answer["rejected"]) == (3, 1, 0, [])
    contact = await _contact(api, ANA)
    assert (contact["address"], contact["name"], contact["language"]) == (ANA, "Ana", "pt")
    assert contact["tags"] == ["a", "b", "c"]
    # Read with another region, the national form is another country's number.
    status, answer = await _import(api, [{"phone": "912345678"}], region="BR")
    assert answer["rejected"] == [{"line": 0, "error": "phone '912345678' is not a valid number"}]


async def test_json_rows_are_checked_one_by_one_by_index(api: Api) -> None:
    rows: list[Any] = [
        {
            "phone": "+351912345678",
            "tags": ["vip"],
            "opt_in_source": "web",
            "opt_in_evidence": {"form": "signup", "ip": "192.0.2.1"},
        },
        "+351912345679",
        {"phone": "+351912345670", "email": "x@example.com"},
        {"phone": 351912345670},
        {"phone": "+351912345671", "tags": "vip;x"},
        {"phone": "+351912345672", "tags": [1]},
        {"name": "No phone"},
        {"phone": "+351912345673", "name": None, "language": None, "tags": None, "timezone": None},
    ]
    status, answer = await _import(api, rows)

    assert status == 200, answer
    assert (answer["received"], answer["created"], answer["opted_in"]) == (8, 3, 1)
    assert answer["rejected"] == [
        {
            "line": 1,
            "error": "must be an object with phone, name, language, tags, timezone, opt_in_source, opt_in_evidence",
        },
        {"line": 2, "error": f"unknown key 'email': the keys are {COLUMNS}"},
        {"line": 3, "error": "phone must be a text, not int"},
        {"line": 5, "error": "tags must be a list of labels (in CSV: separated by ; or |)"},
        {"line": 6, "error": "phone is missing"},
    ]
    assert (await _contact(api, "351912345671"))["tags"] == ["vip", "x"]
    [event] = await api.daemon.hub.storage.policy.ledger("sandbox", ANA)
    assert event["evidence"] == {"opt_in_source": "web", "opt_in_evidence": {"form": "signup", "ip": "192.0.2.1"}}


async def test_text_a_database_cannot_keep_is_a_bad_row(api: Api) -> None:
    status, answer = await _import(
        api,
        "phone,name,opt_in_source,opt_in_evidence\n+351912345678,A\x00na,,\n"
        "+351912345679,Bo,form,a\x00b\n+351912345670,Cy,,\n",
    )
    assert status == 200
    assert answer["rejected"] == [
        {"line": 2, "error": "name must be at most 256 printable characters (no line breaks or control characters)"},
        {"line": 3, "error": "opt_in_evidence may not contain U+0000"},
    ]
    assert answer["created"] == 1


async def test_a_known_contact_is_updated_and_its_tags_kept(api: Api) -> None:
    conversation = await api.write("hello", sender=ANA, name="Ana")
    contact_id = conversation["contact"]["id"]
    await api.ok("PATCH", f"/api/v1/contacts/{contact_id}", {"tags": ["customer"], "language": "en"})
    feed = api.daemon.hub.storage.activity
    cursor = await feed.last_id()

    status, answer = await _import(api, "phone,name,tags,language\n+351 912 345 678,Ana Souza,vip,pt-PT\n")

    assert status == 200
    assert (answer["created"], answer["updated"]) == (0, 1)
    # Open inbox pages are told the contact changed.
    assert [(row.conversation_id, row.kind) for row in await feed.after(cursor)] == [(conversation["id"], "contact")]
    contact = await api.ok("GET", f"/api/v1/contacts/{contact_id}")
    assert (contact["name"], contact["tags"], contact["language"]) == ("Ana Souza", ["customer", "vip"], "pt-PT")
    assert contact["identities"] == [{"kind": "wa_id", "value": ANA}, {"kind": "phone", "value": ANA}]
    # Empty values leave fields as they are.
    await _import(api, "phone,name,tags,language\n+351912345678,,,\n")
    contact = await api.ok("GET", f"/api/v1/contacts/{contact_id}")
    assert (contact["name"], contact["tags"], contact["language"]) == ("Ana Souza", ["customer", "vip"], "pt-PT")


@pytest.mark.parametrize(
    ("body", "params", "status", "code", "message"),
    [
        (
            "phone,email\n+351912345678,a@b.c\n",
            {},
            422,
            "invalid_import",
            "unknown column 'email': the columns are phone",
        ),
        ("name,tags\nAna,vip\n", {}, 422, "invalid_import", "the CSV has no phone column"),
        ("phone,name,\n+351912345678,Ana,\n", {}, 422, "invalid_import", "unknown column with no name: the columns"),
        ("phone,name,Phone\n", {}, 422, "invalid_import", "the column 'phone' is in the header twice"),
        ("", {}, 422, "invalid_import", "the CSV needs a header row"),
        ({"phone": "+351912345678"}, {}, 422, "invalid_import", "the JSON body must be an array of contacts"),
        ("phone\n+351912345678\n", {"region": "XX"}, 400, "invalid_region", "region 'XX' is not a country code"),
        ("phone\n+351912345678\n", {"provider": "nope"}, 404, "unknown_provider", "no provider named 'nope'"),
        ("phone\n+351912345678\n", {"limit": "3"}, 400, "unknown_parameter", "unknown query parameter 'limit'"),
    ],
)
async def test_a_body_that_cannot_be_imported_is_refused_whole(
    api: Api, body: Any, params: dict[str, str], status: int, code: str, message: str
) -> None:
    answered, answer = await _import(api, body, **params)
    assert (answered, answer["error"]["code"]) == (status, code)
    assert message in answer["error"]["message"]
    assert (await api.ok("GET", "/api/v1/contacts"))["contacts"] == []


async def test_other_bodies_and_too_many_rows_are_refused(api: Api) -> None:
    headers = {**AUTH, "Content-Type": "application/vnd.ms-excel"}
    async with api.http.post(f"{api.daemon.url}{PATH}", data=b"phone\n", headers=headers) as response:
        assert response.status == 415
        assert (await response.json())["error"]["code"] == "unsupported_media_type"
    headers = {**AUTH, "Content-Type": "text/csv"}
    async with api.http.post(f"{api.daemon.url}{PATH}", data=b"phone\n\xff\n", headers=headers) as response:
        assert response.status == 400
        assert "not UTF-8" in (await response.json())["error"]["message"]

    status, answer = await _import(api, [{}] * (MAX_ROWS + 1))
    assert (status, answer["error"]["code"]) == (413, "too_many_rows")
    status, answer = await _import(api, "phone\n" + "+351912345678\n" * (MAX_ROWS + 1))
    assert (status, answer["error"]["code"]) == (413, "too_many_rows")
