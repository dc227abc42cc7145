"""Twilio templates are Content API resources: synced, created, sent and
deleted through the provider's methods and ``wahub templates``, against the
fake Twilio cloud."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import AUTH
from tests.plugins.providers.test_twilio import USER, running
from wahub.core.errors import ProviderError
from wahub.plugins.providers.twilio.content import content_variables
from wahub.testing.fake_twilio import FakeTwilio

QUICK_REPLIES = {
    "name": "delivery_check",
    "language": "en",
    "category": "UTILITY",
    "components": [
        {"type": "BODY", "text": "Is {{1}} a good time?", "example": {"body_text": [["9am"]]}},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Yes"}, {"type": "QUICK_REPLY", "text": "No"}]},
    ],
}


async def test_sync_stores_every_page_and_a_template_is_sent_by_its_content_sid(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        wanted = twilio.fake.content.add("order_ready", "Hi {{1}}, order {{2}} is ready", status="approved")
        for index in range(120):  # more than one page of 100
            twilio.fake.content.add(f"draft_{index}", "Draft {{1}}")
        provider = twilio.daemon.hub.providers["main"]
        assert await provider.sync_templates() == {"added": 121, "updated": 0, "removed": 0}
        rows = {row["name"]: row for row in await twilio.daemon.hub.storage.policy.templates("main")}
        assert (rows["order_ready"]["status"], rows["order_ready"]["external_id"]) == ("APPROVED", wanted)
        assert rows["draft_0"]["status"] == "UNSUBMITTED"

        parameters = [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A-42"}]
        template = {
            "name": "order_ready",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": parameters}],
        }
        answer = await twilio.send({"to": USER, "type": "template", "template": template})
        await twilio.status_becomes(answer["id"], "read")
        [sent] = twilio.fake.sent
        assert (sent.kind, sent.text, sent.body["ContentSid"]) == ("template", "order_ready", wanted)
        assert json.loads(sent.body["ContentVariables"]) == {"1": "Ana", "2": "A-42"}


async def test_a_template_missing_a_parameter_is_refused_before_twilio(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        twilio.fake.content.add("order_ready", "Hi {{1}}, order {{2}} is ready", status="approved")
        await twilio.daemon.hub.providers["main"].sync_templates()
        parameters = [{"type": "text", "text": "Ana"}]
        template = {
            "name": "order_ready",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": parameters}],
        }
        body = {"to": USER, "type": "template", "template": template}
        async with twilio.http.post(f"{twilio.daemon.url}/api/v1/messages", json=body, headers=AUTH) as response:
            answer = await response.json()
            assert response.status == 422, answer
            assert "{{2}}" in answer["error"]["message"]
        assert twilio.fake.sent == []


async def test_create_submits_the_content_for_approval_and_delete_removes_it(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        provider = twilio.daemon.hub.providers["main"]
        created = await provider.create_template(QUICK_REPLIES)
        content = twilio.fake.content.contents[created["id"]]
        assert content["types"] == {
            "twilio/quick-reply": {
                "body": "Is {{1}} a good time?",
                "actions": [{"title": "Yes", "id": "Yes"}, {"title": "No", "id": "No"}],
            }
        }
        assert content["variables"] == {"1": "9am"}
        assert twilio.fake.content.approvals[created["id"]]["name"] == "delivery_check"
        [row] = await twilio.daemon.hub.storage.policy.templates("main")
        assert (row["status"], row["external_id"]) == ("RECEIVED", created["id"])

        twilio.fake.content.approve(created["id"])
        assert (await provider.sync_templates())["updated"] == 1
        [row] = await twilio.daemon.hub.storage.policy.templates("main")
        assert row["status"] == "APPROVED"

        await provider.delete_template("delivery_check")
        assert twilio.fake.content.contents == {}
        assert await twilio.daemon.hub.storage.policy.templates("main") == []


async def test_a_header_is_refused_naming_the_component(tmp_path: Path, sqlite_url: str) -> None:
    async with running(tmp_path, sqlite_url) as twilio:
        definition = {**QUICK_REPLIES, "components": [{"type": "HEADER", "format": "TEXT", "text": "Hi"}]}
        with pytest.raises(ProviderError, match="HEADER component"):
            await twilio.daemon.hub.providers["main"].create_template(definition)
        assert twilio.fake.content.contents == {}


def _order_ready(parameters: list[dict[str, str]]) -> dict[str, Any]:
    components = [{"type": "body", "parameters": parameters}]
    return {"name": "order_ready", "language": {"code": "en"}, "components": components}


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wahub", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_templates_create_list_and_delete_through_the_cli(tmp_path: Path, sqlite_url: str) -> None:
    fake = await FakeTwilio().start()
    try:
        config: dict[str, Any] = {
            "wahub": {"database": sqlite_url, "media": {"directory": str(tmp_path / "media")}},
            "providers": [fake.provider_entry("main")],
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        (tmp_path / "template.json").write_text(json.dumps(QUICK_REPLIES))
        where = str(tmp_path / "config.yaml")
        code, _, err = await _cli("templates", "create", str(tmp_path / "template.json"), "-c", where)
        assert code == 0, err
        [sid] = fake.content.contents
        code, out, err = await _cli("templates", "list", "-c", where)
        assert code == 0, err
        assert f"main\tdelivery_check\ten\tUTILITY\tRECEIVED\t-\t{sid}" in out
        code, _, err = await _cli("templates", "delete", "delivery_check", "-c", where)
        assert code == 0, err
        assert fake.content.contents == {}
    finally:
        await fake.close()


def test_positional_variables_are_numbered_header_body_buttons_whatever_the_order() -> None:
    template = {
        "name": "t",
        "components": [
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "c"}]},
            {"type": "body", "parameters": [{"type": "text", "text": "b"}]},
            {"type": "header", "parameters": [{"type": "text", "text": "a"}]},
        ],
    }
    assert content_variables(template) == {"1": "a", "2": "b", "3": "c"}
