"""The fake Twilio cloud refuses what Twilio refuses, with Twilio's error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wahub.testing.fake_twilio import FakeTwilio


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    running = await FakeTwilio().start()
    try:
        yield running
    finally:
        await running.close()


SENDER = {"To": "whatsapp:+16505551234", "From": "whatsapp:+15550783881"}


async def _post(fake: FakeTwilio, form: dict[str, str], *, password: str | None = None) -> tuple[int, Any]:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    headers = {"Authorization": aiohttp.encode_basic_auth(fake.account_sid, password or fake.auth_token)}
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as response:
        return response.status, await response.json()


async def test_wrong_credentials_get_twilios_401(fake: FakeTwilio) -> None:
    status, body = await _post(fake, {"To": "whatsapp:+16505551234"}, password="wrong")
    assert status == 401 and body["code"] == 20003 and body["more_info"].endswith("/20003")
    assert fake.sent == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "whatsapp:+15550783881", "Body": "hi"}, 21604),
        ({"To": "+16505551234", "From": "whatsapp:+15550783881", "Body": "hi"}, 21211),
        ({"To": "whatsapp:+16505551234", "From": "whatsapp:+19999999999", "Body": "hi"}, 63007),
        (SENDER, 21619),
        ({**SENDER, "Body": "x" * 1601}, 21617),
        ({**SENDER, "ContentSid": "HX" + "0" * 32}, 21655),
        (
            {**SENDER, "MediaUrl": "http://127.0.0.1:9/x.jpg"},
            21620,
        ),
    ],
)
async def test_a_malformed_send_gets_twilios_400(fake: FakeTwilio, form: dict[str, str], code: int) -> None:
    status, body = await _post(fake, form)
    assert (status, body["code"], body["status"]) == (400, code, 400), body
    assert fake.sent == []


async def test_content_variables_must_be_a_json_object_of_strings(fake: FakeTwilio) -> None:
    content_sid = fake.content.add("order_ready", "Hi {{1}}", status="approved")
    form = {**SENDER, "ContentSid": content_sid}
    assert (await _post(fake, {**form, "ContentVariables": '{"1": 2}'}))[1]["code"] == 21656
    status, body = await _post(fake, {**form, "ContentVariables": '{"1": "Ana"}'})
    assert status == 201 and body["sid"].startswith("SM") and body["status"] == "queued"
    assert [(s.kind, s.text) for s in fake.sent] == [("template", "order_ready")]


async def test_the_content_api_refuses_a_malformed_content(fake: FakeTwilio) -> None:
    headers = {"Authorization": aiohttp.encode_basic_auth(fake.account_sid, fake.auth_token)}
    async with aiohttp.ClientSession() as http:
        bad = {"friendly_name": "x", "language": "en", "types": {"twilio/quick-reply": {"body": "hi", "actions": []}}}
        async with http.post(f"{fake.url}/v1/Content", json=bad, headers=headers) as response:
            assert response.status == 400 and (await response.json())["code"] == 20001
        async with http.get(f"{fake.url}/v1/Content") as response:
            assert response.status == 401
    assert fake.content.contents == {}
