"""Registering a Meta Cloud API number and setting its two-step PIN, against the
fake Graph API over real HTTP, the bodies checked against Meta's OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from wahub.core.errors import ProviderError
from wahub.core.runtime.app import command_hub
from wahub.plugins.providers.cloud.meta import MetaCloudProvider
from wahub.plugins.providers.cloud.number import pin_problem
from wahub.testing import build_config, plugin_manager
from wahub.testing.fake_graph import FakeGraphServer
from wahub.testing.fake_graph_schema import spec_document


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    server = await FakeGraphServer().start()
    server.number_registered = False
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def meta(graph: FakeGraphServer, database: str) -> AsyncIterator[MetaCloudProvider]:
    pm = plugin_manager()
    config = build_config({"providers": [graph.provider_entry("main")]}, database=database, pm=pm)
    async with command_hub(config, pm) as hub:
        provider = hub.providers["main"]
        assert isinstance(provider, MetaCloudProvider)
        yield provider


def bodies(graph: FakeGraphServer, suffix: str) -> list[object]:
    return [r.json for r in graph.requests if r.method == "POST" and r.path.endswith(suffix)]


async def test_register_sends_the_documented_body_and_sets_the_pin(graph: FakeGraphServer, sqlite_url: str) -> None:
    async with meta(graph, sqlite_url) as provider:
        answer = await provider.register_number("246810")
    assert answer == {"phone_number_id": graph.phone_number_id, "registered": True}
    assert bodies(graph, f"/{graph.phone_number_id}/register") == [{"messaging_product": "whatsapp", "pin": "246810"}]
    assert graph.requests[-1].headers["Authorization"] == f"Bearer {graph.access_token}"
    assert (graph.number_registered, graph.two_step_pin, graph.schema_errors) == (True, "246810", [])


async def test_a_number_with_a_pin_is_registered_only_with_that_pin(graph: FakeGraphServer, sqlite_url: str) -> None:
    graph.two_step_pin = "111111"
    async with meta(graph, sqlite_url) as provider:
        with pytest.raises(ProviderError) as refused:
            await provider.register_number("222222")
        assert refused.value.code == "133005"
        assert "does not match the number's two-step verification PIN" in str(refused.value)
        assert "222222" not in str(refused.value) and not graph.number_registered
        await provider.register_number("111111")
    assert graph.number_registered


async def test_set_pin_posts_the_pin_to_the_number_once_registered(graph: FakeGraphServer, sqlite_url: str) -> None:
    async with meta(graph, sqlite_url) as provider:
        with pytest.raises(ProviderError) as refused:
            await provider.set_two_step_pin("135790")
        assert refused.value.code == "133010"
        assert "run 'wahub number register' first" in str(refused.value)
        await provider.register_number("000000")
        assert await provider.set_two_step_pin("135790") == {
            "phone_number_id": graph.phone_number_id,
            "two_step_pin": "set",
        }
    assert bodies(graph, f"/{graph.phone_number_id}")[-1] == {"pin": "135790"}
    assert (graph.two_step_pin, graph.schema_errors) == ("135790", [])


@pytest.mark.parametrize("pin", ["12345", "1234567", "12345a", "١٢٣٤٥٦", ""])
async def test_a_pin_that_is_not_six_digits_is_refused_before_any_request(
    graph: FakeGraphServer, sqlite_url: str, pin: str
) -> None:
    async with meta(graph, sqlite_url) as provider:
        before = len(graph.requests)
        for call in (provider.register_number, provider.set_two_step_pin):
            with pytest.raises(ProviderError) as refused:
                await call(pin)
            assert refused.value.code == "pin" and "exactly six digits" in str(refused.value)
            assert pin == "" or pin not in str(refused.value)
        assert len(graph.requests) == before
    assert pin_problem(pin) is not None and pin_problem("098765") is None


async def test_the_pin_is_never_logged(
    graph: FakeGraphServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    graph.two_step_pin = "864209"
    async with meta(graph, sqlite_url) as provider:
        with pytest.raises(ProviderError):
            await provider.register_number("975310")
        await provider.register_number("864209")
        await provider.set_two_step_pin("975310")
    assert caplog.records and all(
        "975310" not in r.getMessage() and "864209" not in r.getMessage() for r in caplog.records
    )


async def test_the_fake_refuses_bodies_meta_refuses(graph: FakeGraphServer) -> None:
    """The fake's own checks: the OpenAPI document's schemas, Meta's error body, the PIN not repeated."""
    url = f"{graph.url}/v23.0/{graph.phone_number_id}"
    auth = {"Authorization": f"Bearer {graph.access_token}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        for path, body in (
            ("/register", {"pin": "123456"}),
            ("/register", {"messaging_product": "whatsapp", "pin": "12345"}),
            ("/register", {"messaging_product": "whatsapp", "pin": "123456", "colour": "blue"}),
            ("", {"pin": 123456}),
        ):
            async with http.post(url + path, json=body) as response:
                error = (await response.json())["error"]
            assert (response.status, error["code"], error["type"]) == (400, 100, "OAuthException"), body
        async with http.post(url, json={"new_display_name": "Shop"}) as response:
            assert "keeps only pin" in (await response.json())["error"]["message"]
        async with aiohttp.ClientSession() as anonymous, anonymous.post(url + "/register", json={}) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (401, 190)
    assert graph.schema_errors == [
        "$: 'messaging_product' is a required property",
        "$.pin: Invalid PIN format. PIN must be exactly 6 digits",
        "$: unknown field 'colour'",
        "$.pin: Invalid PIN format. PIN must be exactly 6 digits",
    ]
    assert "12345" not in " ".join(graph.schema_errors[1:])
    schemas = spec_document()["components"]["schemas"]
    assert schemas["WhatsAppBusinessPhoneNumberRegistrationRequest"]["required"] == ["messaging_product", "pin"]
    assert not graph.number_registered and graph.two_step_pin is None
