"""The REST API's contacts over real HTTP, on SQLite and PostgreSQL: found
by name, phone number or BSUID (through the fake Graph API), read with their
ids, consent and conversations, and their name, language, tags and time zone
set by PATCH."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.core.api_client import ANA, BRUNO, CARLA, Api, running_api
from tests.helpers import AUTH
from tests.plugins.providers.test_cloud_api import BSUID, USER, Cloud, _cloud


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with running_api(database_url) as running:
        yield running


async def test_contacts_are_searched_by_name_and_phone_and_paged(api: Api) -> None:
    for sender, name in ((ANA, "Ana Souza"), (BRUNO, "Bruno Lima"), (CARLA, "Carla Dias")):
        await api.write("hello", sender=sender, name=name)

    def names(page: dict[str, Any]) -> list[str]:
        return [contact["name"] for contact in page["contacts"]]

    assert names(await api.ok("GET", "/api/v1/contacts", q="bruno")) == ["Bruno Lima"]
    # Any case, in any alphabet, on SQLite as on PostgreSQL; % and _ are text to find.
    await api.write("привет", sender="15551230009", name="Мария_Ёлкина")
    assert names(await api.ok("GET", "/api/v1/contacts", q="МАРИЯ_ё")) == ["Мария_Ёлкина"]
    assert names(await api.ok("GET", "/api/v1/contacts", q="a_s")) == []
    assert names(await api.ok("GET", "/api/v1/contacts", q="%")) == []
    # A phone number as people write it finds the contact stored by its digits.
    assert names(await api.ok("GET", "/api/v1/contacts", q="+1 (555) 123-0003")) == ["Carla Dias"]
    everyone = ["Ana Souza", "Bruno Lima", "Carla Dias", "Мария_Ёлкина"]
    assert names(await api.ok("GET", "/api/v1/contacts", q="1555123")) == everyone
    assert names(await api.ok("GET", "/api/v1/contacts", q="nobody")) == []

    first = await api.ok("GET", "/api/v1/contacts", limit=2)
    assert names(first) == ["Ana Souza", "Bruno Lima"]
    rest = await api.ok("GET", "/api/v1/contacts", limit=2, after=first["next"])
    assert (names(rest), rest["next"]) == (["Carla Dias", "Мария_Ёлкина"], None)


async def test_a_contact_shows_its_ids_consent_and_conversations(api: Api) -> None:
    conversation = await api.write("hello", sender=ANA, name="Ana")
    contact_id = conversation["contact"]["id"]
    contact = await api.ok("GET", f"/api/v1/contacts/{contact_id}")
    assert (contact["id"], contact["provider"], contact["address"]) == (contact_id, "sandbox", ANA)
    assert contact["identities"] == [{"kind": "wa_id", "value": ANA}]
    assert contact["consent"] == {"all": None, "marketing": None}
    assert contact["conversations"] == [conversation["id"]]
    assert (contact["language"], contact["tags"], contact["timezone"]) == (None, [], None)

    opt_out = {"action": "opt_out", "evidence": {"call": "asked on the phone"}}
    status, _ = await api.call("POST", f"/api/v1/contacts/sandbox/{ANA}/consent", opt_out)
    assert status == 200
    assert (await api.ok("GET", f"/api/v1/contacts/{contact_id}"))["consent"]["all"] == "opt_out"


async def test_patch_sets_a_contacts_language_name_tags_and_time_zone(api: Api) -> None:
    conversation = await api.write("hello", sender=ANA, name="Ana")
    path = f"/api/v1/contacts/{conversation['contact']['id']}"
    body = {"language": "pt-br", "name": "Ana Souza", "tags": ["vip", "late payer", "vip"], "timezone": "America/Bahia"}
    patched = await api.ok("PATCH", path, body)
    assert (patched["language"], patched["language_source"]) == ("pt-BR", "set")
    assert (patched["name"], patched["tags"], patched["timezone"]) == (
        "Ana Souza",
        ["vip", "late payer"],
        "America/Bahia",
    )
    assert await api.ok("GET", path) == patched
    listed = (await api.ok("GET", "/api/v1/conversations"))["conversations"][0]["contact"]
    assert (listed["language"], listed["name"]) == ("pt-BR", "Ana Souza")

    for given, stored in (
        ("ZH-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("de-CH-1996", "de-CH-1996"),
        ("pt_br", "pt-BR"),
    ):
        assert (await api.ok("PATCH", path, {"language": given}))["language"] == stored
    cleared = await api.ok("PATCH", path, {"language": None, "tags": None, "timezone": None})
    assert (cleared["language"], cleared["language_source"], cleared["tags"], cleared["timezone"]) == (
        None,
        None,
        [],
        None,
    )
    assert cleared["name"] == "Ana Souza"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"nickname": "Ani", "language": "en"}, "unknown key 'nickname'"),
        ({"language": "english!"}, "language: expected a language code such as en or pt-BR"),
        ({"language": "e"}, "language: expected a language code such as en or pt-BR"),
        ({"language": 5}, "language: expected a language code such as en or pt-BR"),
        ({"tags": "vip"}, "tags must be a list of at most 50 labels of 1 to 64 printable characters"),
        ({"tags": [f"t{i}" for i in range(51)]}, "at most 50 labels"),
        ({"tags": ["x" * 65]}, "1 to 64 printable characters"),
        ({"tags": ["vip", ""]}, "got ''"),
        ({"tags": [3]}, "got a int"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"name": ""}, "name must be 1 to 256 printable characters"),
        (["name"], "the body must be a JSON object with any of name, language, tags, timezone"),
    ],
)
async def test_bad_contact_changes_are_refused_and_change_nothing(api: Api, body: Any, says: str) -> None:
    conversation = await api.write("hello", sender=ANA, name="Ana")
    path = f"/api/v1/contacts/{conversation['contact']['id']}"
    before = await api.ok("GET", path)
    status, answer = await api.call("PATCH", path, body)
    assert (status, answer["error"]["code"]) == (422, "invalid_contact"), answer
    assert says in answer["error"]["message"]
    assert await api.ok("GET", path) == before


@pytest.fixture
async def cloud(database_url: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    async for running in _cloud("meta_cloud", database_url, tmp_path):
        yield running


async def test_a_contact_is_found_by_its_bsuid_and_its_phone(cloud: Cloud) -> None:
    await cloud.inbound({"type": "text", "text": {"body": "hello"}}, user_id=BSUID)

    async def search(q: str) -> list[dict[str, Any]]:
        url = f"{cloud.daemon.url}/api/v1/contacts"
        async with cloud.http.get(url, params={"q": q}, headers=AUTH) as response:
            assert response.status == 200
            found: list[dict[str, Any]] = (await response.json())["contacts"]
            return found

    [by_bsuid] = await search(BSUID[:10].lower())
    assert by_bsuid["address"] == BSUID
    assert await search(USER) == [by_bsuid]
    assert await search(f"+{USER[0]} {USER[1:4]} {USER[4:]}") == [by_bsuid]

    async with cloud.http.get(f"{cloud.daemon.url}/api/v1/contacts/{by_bsuid['id']}", headers=AUTH) as response:
        contact = await response.json()
    assert {(i["kind"], i["value"]) for i in contact["identities"]} >= {("bsuid", BSUID), ("wa_id", USER)}
    url = f"{cloud.daemon.url}/api/v1/conversations"
    async with cloud.http.get(url, params={"contact_id": by_bsuid["id"]}, headers=AUTH) as response:
        [conversation] = (await response.json())["conversations"]
    assert conversation["contact"] == {"id": by_bsuid["id"], "address": BSUID, "name": "Ana", "language": None}
    assert conversation["id"] == contact["conversations"][0]
