"""The fake Graph API / 360dialog server, spoken to over real HTTP."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from wahub.testing import wait_until
from wahub.testing.fake_graph import AMENDMENTS, SPEC_PATH, WEBHOOK_SECRET_HEADER, FakeGraphServer, validate_message

V = "v23.0"
Start = Callable[..., Awaitable[FakeGraphServer]]


@dataclass
class Receiver:
    """A stand-in daemon: records every webhook it is posted."""

    url: str = ""
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def statuses(self) -> list[dict[str, Any]]:
        return [
            status
            for _path, _headers, raw in self.posts
            for status in json.loads(raw)["entry"][0]["changes"][0]["value"].get("statuses", [])
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def hook(request: web.Request) -> web.Response:
        found.posts.append((request.path, dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield found
    await runner.cleanup()


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[FakeGraphServer] = []

    async def start(**kwargs: Any) -> FakeGraphServer:
        server = await FakeGraphServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(server: FakeGraphServer) -> dict[str, str]:
    if server.platform == "meta_cloud":
        return {"Authorization": f"Bearer {server.access_token}"}
    return {"D360-API-KEY": server.api_key}


def messages_url(server: FakeGraphServer) -> str:
    if server.platform == "meta_cloud":
        return f"{server.url}/{V}/{server.phone_number_id}/messages"
    return f"{server.url}/messages"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, server: FakeGraphServer | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = auth(server) if server is not None else {}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


TO = {"messaging_product": "whatsapp", "to": "+16505551234"}
MEDIA = "1037543291543636"
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
VALID: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": {"body": "Hi https://x.y", "preview_url": True}},
    "image id": {"type": "image", "image": {"id": MEDIA, "caption": "a cat"}},
    "image link": {"type": "image", "image": {"link": "https://example.com/a.jpg"}},
    "video": {"type": "video", "video": {"link": "https://example.com/a.mp4", "caption": "clip"}},
    "audio": {"type": "audio", "audio": {"id": MEDIA}},
    "document": {"type": "document", "document": {"id": MEDIA, "filename": "inv.pdf", "caption": "invoice"}},
    "sticker": {"type": "sticker", "sticker": {"id": MEDIA}},
    "location": {
        "type": "location",
        "location": {"latitude": 37.75, "longitude": -122.42, "name": "HQ", "address": "1 Way"},
    },
    "contacts": {
        "type": "contacts",
        "contacts": [
            {
                "name": {"formatted_name": "J S", "first_name": "J"},
                "phones": [{"phone": "+1 650 555 1234", "type": "WORK", "wa_id": "16505551234"}],
            }
        ],
    },
    "reaction": {"type": "reaction", "reaction": {"message_id": WAMID, "emoji": "👍"}},
    "reaction removed": {"type": "reaction", "reaction": {"message_id": WAMID, "emoji": ""}},
    "buttons with image header": {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "header": {"type": "image", "image": {"id": MEDIA}},
            "body": {"text": "Pick one"},
            "footer": {"text": "footer"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                    {"type": "reply", "reply": {"id": "no", "title": "No"}},
                ]
            },
        },
    },
    "list": {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "header": {"type": "text", "text": "Menu"},
            "body": {"text": "Choose"},
            "footer": {"text": "footer"},
            "action": {
                "button": "Choose",
                "sections": [{"title": "S1", "rows": [{"id": "r1", "title": "Row", "description": "a row"}]}],
            },
        },
    },
    "cta_url": {
        "type": "interactive",
        "interactive": {
            "type": "cta_url",
            "body": {"text": "See it"},
            "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://x.y/1"}},
        },
    },
    "flow": {
        "type": "interactive",
        "interactive": {
            "type": "flow",
            "body": {"text": "Sign up"},
            "action": {
                "name": "flow",
                "parameters": {
                    "flow_message_version": "3",
                    "flow_id": "1234",
                    "flow_cta": "Start",
                    "flow_token": "tok",
                    "mode": "published",
                    "flow_action": "navigate",
                    "flow_action_payload": {"screen": "FIRST", "data": {"k": "v"}},
                },
            },
        },
    },
    "template": {
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "en_US", "policy": "deterministic"},
            "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"id": MEDIA}}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "parameter_name": "order_id", "text": "42"},
                        {
                            "type": "currency",
                            "currency": {"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990},
                        },
                        {"type": "date_time", "date_time": {"fallback_value": "February 25, 1977"}},
                    ],
                },
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": 0,
                    "parameters": [{"type": "payload", "payload": "CANCEL_42"}],
                },
                {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "42"}]},
                {
                    "type": "button",
                    "sub_type": "copy_code",
                    "index": 2,
                    "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}],
                },
            ],
        },
    },
    "reply": {"type": "text", "text": {"body": "quoted"}, "context": {"message_id": WAMID}},
    "callback data": {"type": "text", "text": {"body": "x"}, "biz_opaque_callback_data": "campaign-7"},
}
BSUID = "US.13491208655302741918"
TO_BSUID = {"messaging_product": "whatsapp", "recipient": BSUID, "type": "text", "text": {"body": "hi"}}


@pytest.mark.parametrize("kind", list(VALID))
def test_bodies_meta_accepts_are_valid(kind: str) -> None:
    assert validate_message({**TO, **VALID[kind]}) == []
    assert validate_message({**TO, "recipient_type": "individual", **VALID[kind]}) == []


@pytest.mark.parametrize("kind", [kind for kind in VALID if kind != "template"])
def test_an_unknown_top_level_field_is_refused(kind: str) -> None:
    assert validate_message({**TO, **VALID[kind], "colour": "red"}) == [
        "$: Unevaluated properties are not allowed ('colour' was unexpected)"
    ]


def test_the_document_leaves_template_messages_open() -> None:
    """TemplateMessage's allOf member has no additionalProperties: false, so (a) closes nothing."""
    assert validate_message({**TO, **VALID["template"], "colour": "red"}) == []


INDIVIDUAL = {**TO, "recipient_type": "individual"}
# For each loosening amendment, a body that Meta accepts and that the document alone refuses.
NEEDS: dict[str, dict[str, Any]] = {
    "optional_recipient_type": {**TO, **VALID["text"]},
    "biz_opaque_callback_data": {**INDIVIDUAL, **VALID["callback data"]},
    "numeric_coordinates": {**INDIVIDUAL, **VALID["location"]},
    "cta_url": {**INDIVIDUAL, **VALID["cta_url"]},
    "optional_language_policy": {
        **INDIVIDUAL,
        "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    },
    "template_button_index": {
        **INDIVIDUAL,
        "type": "template",
        "template": {
            "name": "t",
            "language": {"code": "en", "policy": "deterministic"},
            "components": [{"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": []}],
        },
    },
    "template_button_sub_types": {
        **INDIVIDUAL,
        "type": "template",
        "template": {
            "name": "t",
            "language": {"code": "en", "policy": "deterministic"},
            "components": [{"type": "button", "sub_type": "copy_code", "index": "2", "parameters": []}],
        },
    },
}


@pytest.mark.parametrize("name", list(NEEDS))
def test_each_loosening_is_needed(name: str) -> None:
    assert validate_message(NEEDS[name]) == []
    assert validate_message(NEEDS[name], amended=False) != []


def test_amendments_are_all_covered_and_text_limit_tightens() -> None:
    assert set(AMENDMENTS) == {*NEEDS, "text_body_limit"}
    assert all(AMENDMENTS.values())
    long_text = {**INDIVIDUAL, "type": "text", "text": {"body": "x" * 4097}}
    assert validate_message(long_text, amended=False) == []
    assert validate_message(long_text) == [
        "$.text.body: " + f"{'x' * 4097!r}"[:60] + "... (4099 characters) is too long"
    ]
    assert validate_message({**INDIVIDUAL, "type": "text", "text": {}}) == ["$.text: 'body' is a required property"]


# The document's own request examples that it refuses even so (none is a shape the reference covers).
REFUSED_EXAMPLES = {
    "Send Catalog Template Message": "$.template.components[1].sub_type: 'CATALOG' is not one of",
    "Send Multi-Product Message": "$.interactive.header.type: '<HEADER_TYPE>' is not one of",
    "Send Order Details Message": "$.interactive.type: 'order_details' is not one of",
    "Send Order Status Message": "$.interactive.type: 'order_status' is not one of",
    "Send Reply to List Message": "$: 'type' is a required property",
    "Send Text Message with Preview URL": "$: 'type' is a required property",
}


def test_the_documents_own_examples() -> None:
    document = yaml.load(SPEC_PATH.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    operation = document["paths"]["/{Version}/{Phone-Number-ID}/messages"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    refused = {}
    for name, example in examples.items():
        if example["value"].get("status") != "read" and (errors := validate_message(example["value"])):
            refused[name] = errors[0]
    assert set(refused) == set(REFUSED_EXAMPLES)
    assert all(refused[name].startswith(start) for name, start in REFUSED_EXAMPLES.items())
    assert len(examples) - len(refused) >= 40


def test_validation_does_not_touch_the_body() -> None:
    body = {**TO_BSUID}
    before = copy.deepcopy(body)
    assert validate_message(body) == []
    assert body == before
    assert validate_message({**body, "to": "1"}) == ["$: 'to' and 'recipient' exclude each other"]
    assert validate_message({**TO, "type": "bogus"})[0].startswith("$.type: 'bogus' is not one of ['audio'")
    assert validate_message({**TO, "type": "image", "image": {"id": "1", "link": "https://x.y/a.jpg"}}) == [
        "$.image: matches more than one of the allowed shapes"
    ]
    title = {"type": "reply", "reply": {"id": "a", "title": "x" * 21}}
    button = {**VALID["buttons with image header"]["interactive"], "action": {"buttons": [title]}}
    assert validate_message({**TO, "type": "interactive", "interactive": button}) == [
        f"$.interactive.action.buttons[0].reply.title: {'x' * 21!r} is too long"
    ]


# -- over HTTP ------------------------------------------------------------------


async def test_meta_refuses_missing_or_wrong_token(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    body = {**TO, **VALID["text"]}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": graph.access_token}):
        async with http.post(messages_url(graph), json=body, headers=headers) as response:
            assert response.status == 401
            error = (await response.json())["error"]
    assert error["code"] == 190 and error["type"] == "OAuthException" and error["message"].startswith("(#190) ")
    assert graph.messages == [] and len(graph.requests) == 3
    assert graph.requests[1].headers["Authorization"] == "Bearer nope"


async def test_dialog360_refuses_missing_or_wrong_key(start: Start, http: aiohttp.ClientSession) -> None:
    d360 = await start(platform="dialog360")
    for headers in ({}, {"D360-API-KEY": "nope"}, {"Authorization": f"Bearer {d360.api_key}"}):
        async with http.post(messages_url(d360), json={**TO, **VALID["text"]}, headers=headers) as response:
            assert response.status == 401
            meta = (await response.json())["meta"]
            assert meta["httpCode"] == 401 and meta["success"] is False and meta["developerMessage"]
    assert d360.messages == []


@pytest.mark.parametrize("platform", ["meta_cloud", "dialog360"])
async def test_a_valid_text_is_accepted(start: Start, http: aiohttp.ClientSession, platform: str) -> None:
    graph = await start(platform=platform)
    body = {**TO, "recipient_type": "individual", **VALID["text"]}
    status, answer = await call(http, "POST", messages_url(graph), graph, json=body)
    assert status == 200
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": "+16505551234", "wa_id": "16505551234"}]
    [message] = answer["messages"]
    assert message["id"].startswith("wamid.") and message["message_status"] == "accepted"
    assert graph.messages == [body] and graph.schema_errors == []
    assert graph.requests[-1].json == body and json.loads(graph.requests[-1].raw) == body


async def test_a_bsuid_recipient_is_answered_with_user_id(
    start: Start, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    graph = await start()
    graph.attach(receiver.url)
    status, answer = await call(http, "POST", messages_url(graph), graph, json=TO_BSUID)
    assert status == 200
    assert answer["contacts"] == [{"input": BSUID, "user_id": BSUID}]
    await graph.settle()
    assert [s["recipient_user_id"] for s in receiver.statuses()] == [BSUID] * 2
    assert all("recipient_id" not in s for s in receiver.statuses())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {**TO, **VALID["text"], "colour": "red"},
            "$: Unevaluated properties are not allowed ('colour' was unexpected)",
        ),
        ({**TO, "type": "text", "text": {"body": "x" * 4097}}, "$.text.body: "),
        ({"messaging_product": "whatsapp", **VALID["text"]}, "$: 'to' is a required property"),
    ],
    ids=["unknown field", "text too long", "no to"],
)
async def test_an_invalid_body_is_refused(
    start: Start, http: aiohttp.ClientSession, body: dict[str, Any], expected: str
) -> None:
    graph = await start()
    status, answer = await call(http, "POST", messages_url(graph), graph, json=body)
    assert status == 400
    assert answer["error"]["code"] == 100 and answer["error"]["message"] == "(#100) Invalid parameter"
    assert len(graph.schema_errors) == 1 and graph.schema_errors[0].startswith(expected)
    assert answer["error"]["error_data"]["details"] == graph.schema_errors[0]
    assert graph.messages == []


async def test_mark_read_and_typing_indicator(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}
    typing = {**read, "typing_indicator": {"type": "text"}}
    for body in (read, typing):
        assert await call(http, "POST", messages_url(graph), graph, json=body) == (200, {"success": True})
    assert graph.reads == [read, typing] and graph.messages == []
    for bad in ({**read, "message_id": ""}, {**read, "messaging_product": "sms"}, {**read, "typing_indicator": {}}):
        status, answer = await call(http, "POST", messages_url(graph), graph, json=bad)
        assert status == 400 and answer["error"]["code"] == 100
    assert len(graph.schema_errors) == 3 and len(graph.reads) == 2


async def test_meta_media_upload_url_download_delete(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    data = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n\x00\xff" * 50
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "image/png")
    form.add_field("file", data, filename="cat.png", content_type="image/png")
    status, answer = await call(http, "POST", f"{graph.url}/{V}/{graph.phone_number_id}/media", graph, data=form)
    assert status == 200
    media_id = answer["id"]
    item = graph.media[media_id]
    assert (item.data, item.mime_type, item.filename) == (data, "image/png", "cat.png")
    assert item.sha256 == hashlib.sha256(data).hexdigest()

    status, info = await call(http, "GET", f"{graph.url}/{V}/{media_id}", graph)
    assert status == 200
    assert info["url"].startswith(f"{graph.url}/lookaside/whatsapp_business/attachments/?mid={media_id}&ext=")
    assert info == {**info, "messaging_product": "whatsapp", "mime_type": "image/png", "id": media_id}
    assert info["sha256"] == item.sha256 and info["file_size"] == str(len(data))

    async with http.get(info["url"], headers=auth(graph)) as response:
        assert response.status == 200 and response.content_type == "image/png"
        assert await response.read() == data
    async with http.get(info["url"]) as response:
        assert response.status == 401

    assert await call(http, "DELETE", f"{graph.url}/{V}/{media_id}", graph) == (200, {"success": True})
    status, answer = await call(http, "GET", f"{graph.url}/{V}/{media_id}", graph)
    assert status == 404 and answer["error"]["code"] == 100


async def test_upload_without_a_part_is_refused(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("file", b"x", filename="a.txt", content_type="text/plain")
    status, answer = await call(http, "POST", f"{graph.url}/{V}/{graph.phone_number_id}/media", graph, data=form)
    assert status == 400 and answer["error"]["code"] == 100 and graph.media == {}


async def test_dialog360_media_url_is_metas_lookaside(start: Start, http: aiohttp.ClientSession) -> None:
    d360 = await start(platform="dialog360")
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.4", filename="inv.pdf", content_type="application/pdf")
    form.add_field("type", "application/pdf")
    form.add_field("messaging_product", "whatsapp")
    status, answer = await call(http, "POST", f"{d360.url}/media", d360, data=form)
    assert status == 200
    status, info = await call(http, "GET", f"{d360.url}/{answer['id']}", d360)
    assert status == 200 and info["file_size"] == "8"
    prefix = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid="
    assert info["url"].startswith(prefix + answer["id"])
    url = info["url"].replace("https://lookaside.fbsbx.com", d360.url)
    async with http.get(url, headers=auth(d360)) as response:
        assert response.status == 200 and await response.read() == b"%PDF-1.4"
    async with http.get(url) as response:
        assert response.status == 401
    assert await call(http, "DELETE", f"{d360.url}/{answer['id']}", d360) == (200, {"success": True})
    assert d360.media == {}


async def test_meta_template_paging(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    for n in range(30):
        graph.add_template({"name": f"t{n:02}", "language": "en_US", "category": "UTILITY", "components": []})
    status, first = await call(http, "GET", f"{graph.url}/{V}/{graph.waba_id}/message_templates", graph)
    assert status == 200 and len(first["data"]) == 25
    assert set(first["paging"]["cursors"]) == {"before", "after"}
    assert first["paging"]["next"].startswith(f"{graph.url}/{V}/{graph.waba_id}/message_templates?")
    status, second = await call(http, "GET", first["paging"]["next"], graph)
    assert status == 200 and len(second["data"]) == 5 and "next" not in second["paging"]
    names = [t["name"] for t in first["data"] + second["data"]]
    assert names == [f"t{n:02}" for n in range(30)]
    assert all(t["status"] == "APPROVED" and t["id"].isdigit() for t in graph.templates)
    status, small = await call(http, "GET", f"{graph.url}/{V}/{graph.waba_id}/message_templates?limit=10", graph)
    assert len(small["data"]) == 10 and "limit=10" in small["paging"]["next"]


TEMPLATE = {
    "name": "order_update",
    "language": "en_US",
    "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Hi {{1}}", "example": {"body_text": [["Ana"]]}}],
}


async def test_meta_template_create_edit_delete(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    templates = f"{graph.url}/{V}/{graph.waba_id}/message_templates"
    for bad in (
        {**TEMPLATE, "category": "PROMO"},
        {**TEMPLATE, "components": [{"type": "FOOTER", "text": "x"}]},
        {key: value for key, value in TEMPLATE.items() if key != "name"},
    ):
        status, answer = await call(http, "POST", templates, graph, json=bad)
        assert status == 400 and answer["error"]["code"] == 100
    status, created = await call(http, "POST", templates, graph, json=TEMPLATE)
    assert status == 200 and created == {"id": created["id"], "status": "PENDING", "category": "UTILITY"}
    status, answer = await call(http, "POST", templates, graph, json=TEMPLATE)
    assert status == 400, "the same name and language twice"
    [stored] = graph.templates
    assert stored["status"] == "PENDING" and stored["name"] == "order_update"

    edit = {"category": "MARKETING", "components": [{"type": "BODY", "text": "Hello {{1}}"}]}
    assert await call(http, "POST", f"{graph.url}/{V}/{created['id']}", graph, json=edit) == (200, {"success": True})
    assert stored["category"] == "MARKETING" and stored["components"][0]["text"] == "Hello {{1}}"
    status, _ = await call(http, "POST", f"{graph.url}/{V}/{created['id']}", graph, json={"name": "other"})
    assert status == 400

    status, _ = await call(http, "DELETE", f"{templates}?name=order_update&hsm_id=999", graph)
    assert status == 404
    assert await call(http, "DELETE", f"{templates}?name=order_update", graph) == (200, {"success": True})
    assert graph.templates == []
    status, answer = await call(http, "DELETE", f"{templates}?name=order_update", graph)
    assert status == 404 and answer["error"]["code"] == 100


async def test_dialog360_templates(start: Start, http: aiohttp.ClientSession) -> None:
    d360 = await start(platform="dialog360")
    for n in range(7):
        d360.add_template({"name": f"t{n}", "language": "en", "category": "MARKETING", "components": []})
    status, page = await call(http, "GET", f"{d360.url}/v1/configs/templates?limit=5&offset=5", d360)
    assert status == 200
    assert {key: page[key] for key in ("count", "limit", "offset", "total")} == {
        "count": 2,
        "limit": 5,
        "offset": 5,
        "total": 7,
    }
    assert [t["name"] for t in page["waba_templates"]] == ["t5", "t6"]
    status, created = await call(http, "POST", f"{d360.url}/v1/configs/templates", d360, json=TEMPLATE)
    assert status == 200 and created["status"] == "PENDING"
    status, _ = await call(http, "POST", f"{d360.url}/v1/configs/templates", d360, json={"name": "x"})
    assert status == 400
    status, _ = await call(http, "DELETE", f"{d360.url}/v1/configs/templates/order_update", d360)
    assert status == 200 and [t["name"] for t in d360.templates] == [f"t{n}" for n in range(7)]


@pytest.mark.parametrize("platform", ["meta_cloud", "dialog360"])
async def test_business_profile(start: Start, http: aiohttp.ClientSession, platform: str) -> None:
    graph = await start(platform=platform)
    url = f"{graph.url}/{V}/{graph.phone_number_id}" if platform == "meta_cloud" else graph.url
    url += "/whatsapp_business_profile"
    status, answer = await call(http, "GET", f"{url}?fields=about,vertical", graph)
    assert status == 200
    assert answer == {"data": [{"about": graph.profile["about"], "vertical": "OTHER", "messaging_product": "whatsapp"}]}
    update = {"messaging_product": "whatsapp", "about": "Open 9-5", "vertical": "RETAIL", "websites": ["https://x.y"]}
    assert await call(http, "POST", url, graph, json=update) == (200, {"success": True})
    status, answer = await call(http, "GET", url, graph)
    assert answer["data"][0]["about"] == "Open 9-5" and answer["data"][0]["websites"] == ["https://x.y"]
    for bad in (
        {**update, "vertical": "SPACESHIPS"},
        {**update, "about": "x" * 140},
        {**update, "colour": "red"},
        {"about": "no product"},
    ):
        status, answer = await call(http, "POST", url, graph, json=bad)
        assert status == 400 and answer["error"]["code"] == 100
    assert graph.profile["vertical"] == "RETAIL"
    assert any(error.startswith("$.vertical: 'SPACESHIPS' is not one of") for error in graph.schema_errors)
    status, _ = await call(http, "GET", f"{url}?fields=about,colour", graph)
    assert status == 400


async def test_phone_number_fields(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    status, phone = await call(http, "GET", f"{graph.url}/v25.0/{graph.phone_number_id}", graph)
    assert status == 200 and phone == graph.phone
    assert phone["verified_name"] == "Wahub Test" and phone["throughput"] == {"level": "STANDARD"}
    fields = "quality_rating,whatsapp_business_manager_messaging_limit"
    status, phone = await call(http, "GET", f"{graph.url}/{V}/{graph.phone_number_id}?fields={fields}", graph)
    assert phone == {
        "id": graph.phone_number_id,
        "quality_rating": "GREEN",
        "whatsapp_business_manager_messaging_limit": "TIER_1K",
    }
    for method, path in (("GET", f"/{V}/123"), ("POST", f"/{V}/{graph.phone_number_id}/deregister"), ("GET", "/x")):
        status, answer = await call(http, method, graph.url + path, graph)
        assert status == 404 and answer["error"]["code"] == 100, path


def signature_ok(secret: str, headers: dict[str, str], raw: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Hub-Signature-256", ""), expected)


async def test_meta_status_webhooks_are_signed(start: Start, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    graph = await start()
    graph.attach(receiver.url, name="cloud")
    body = {**TO, "type": "text", "text": {"body": "Olá ✓"}, "biz_opaque_callback_data": "c-1"}
    status, answer = await call(http, "POST", messages_url(graph), graph, json=body)
    assert status == 200
    await graph.settle()
    assert len(receiver.posts) == 2
    for path, headers, raw in receiver.posts:
        assert path == "/webhooks/cloud" and signature_ok(graph.app_secret, headers, raw)
        assert not signature_ok("another-secret", headers, raw)
        envelope = json.loads(raw)
        assert envelope["object"] == "whatsapp_business_account"
        [entry] = envelope["entry"]
        assert entry["id"] == graph.waba_id and isinstance(entry["time"], int)
        value = entry["changes"][0]["value"]
        assert entry["changes"][0]["field"] == "messages" and value["messaging_product"] == "whatsapp"
        assert value["metadata"] == {"display_phone_number": "15550783881", "phone_number_id": graph.phone_number_id}
    sent, delivered = receiver.statuses()
    assert (sent["status"], delivered["status"]) == ("sent", "delivered")
    assert sent["id"] == delivered["id"] == answer["messages"][0]["id"]
    assert sent["recipient_id"] == "16505551234" and sent["biz_opaque_callback_data"] == "c-1"
    assert isinstance(sent["timestamp"], str)
    assert sent["pricing"] == {**sent["pricing"], "billable": False, "pricing_model": "PMP", "category": "service"}
    assert graph.statuses_sent == [sent, delivered]


async def test_template_statuses_carry_its_category(
    start: Start, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    graph = await start()
    graph.add_template({"name": "promo", "language": "en", "category": "MARKETING", "components": []})
    graph.attach(receiver.url)
    body = {**TO, "type": "template", "template": {"name": "promo", "language": {"code": "en"}}}
    assert (await call(http, "POST", messages_url(graph), graph, json=body))[0] == 200
    await graph.settle()
    assert {s["pricing"]["category"] for s in graph.statuses_sent} == {"marketing"}
    assert all(s["pricing"]["billable"] for s in graph.statuses_sent)


async def test_dialog360_webhooks_carry_the_secret_header(
    start: Start, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    d360 = await start(platform="dialog360")
    d360.attach(receiver.url)
    assert (await call(http, "POST", messages_url(d360), d360, json={**TO, **VALID["text"]}))[0] == 200
    await d360.settle()
    assert [s["status"] for s in receiver.statuses()] == ["sent", "delivered"]
    for path, headers, _raw in receiver.posts:
        assert path == "/webhooks/main" and headers[WEBHOOK_SECRET_HEADER] == d360.webhook_secret
        assert "X-Hub-Signature-256" not in headers

    config = {"url": f"{receiver.url}/configured", "headers": {"X-Extra": "1"}}
    assert await call(http, "POST", f"{d360.url}/v1/configs/webhook", d360, json=config) == (
        200,
        {"url": config["url"]},
    )
    assert await call(http, "GET", f"{d360.url}/v1/configs/webhook", d360) == (200, {"url": config["url"]})
    assert await d360.send_inbound({"type": "text", "text": {"body": "hi"}}) == 200
    path, headers, _raw = receiver.posts[-1]
    assert path == "/configured" and headers["X-Extra"] == "1"
    assert headers[WEBHOOK_SECRET_HEADER] == d360.webhook_secret


async def test_send_inbound_and_deliver(start: Start, receiver: Receiver) -> None:
    graph = await start()
    with pytest.raises(RuntimeError):
        await graph.send_inbound({"type": "text", "text": {"body": "hi"}})
    graph.attach(receiver.url + "/")
    image_id = graph.add_media(b"jpeg", "image/jpeg")
    image = {"type": "image", "image": {"id": image_id, "mime_type": "image/jpeg", "sha256": "x"}}
    assert await graph.send_inbound(image, user_id="US.1349") == 200
    path, headers, raw = receiver.posts[-1]
    assert path == "/webhooks/main" and signature_ok(graph.app_secret, headers, raw)
    value = json.loads(raw)["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana"}, "wa_id": "16505551234", "user_id": "US.1349"}]
    [message] = value["messages"]
    assert message["from"] == "16505551234" and message["from_user_id"] == "US.1349"
    assert message["id"].startswith("wamid.") and message["timestamp"].isdigit() and message["image"]["id"] == image_id

    update = {"event": "APPROVED", "message_template_id": 1, "message_template_name": "t", "reason": "NONE"}
    assert await graph.deliver(update, field="message_template_status_update") == 200
    change = json.loads(receiver.posts[-1][2])["entry"][0]["changes"][0]
    assert change == {"field": "message_template_status_update", "value": update}


async def test_fail_next(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start()
    graph.fail_next(131056, count=2, message="Pair rate limit hit", details="wait")
    graph.fail_next(130429, http_status=429)
    phone_url = f"{graph.url}/{V}/{graph.phone_number_id}"
    body = {**TO, **VALID["text"]}
    for url, kwargs in ((messages_url(graph), {"json": body}), (phone_url, {})):
        status, answer = await call(http, "POST" if kwargs else "GET", url, graph, **kwargs)
        assert status == 400
        assert answer["error"] == {
            "message": "(#131056) Pair rate limit hit",
            "type": "OAuthException",
            "code": 131056,
            "error_data": {"messaging_product": "whatsapp", "details": "wait"},
            "fbtrace_id": answer["error"]["fbtrace_id"],
        }
    status, answer = await call(http, "POST", messages_url(graph), graph, json=body)
    assert status == 429 and answer["error"]["code"] == 130429
    assert (await call(http, "POST", messages_url(graph), graph, json=body))[0] == 200
    assert graph.messages == [body] and len(graph.requests) == 4


async def test_fail_later(start: Start, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    graph = await start()
    graph.attach(receiver.url)
    graph.fail_later(131047, "Re-engagement message")
    body = {**TO, **VALID["text"]}
    for _ in range(2):
        assert (await call(http, "POST", messages_url(graph), graph, json=body))[0] == 200
    await graph.settle()
    first = [s for s in graph.statuses_sent if s["id"] == graph.statuses_sent[0]["id"]]
    assert [s["status"] for s in first] == ["sent", "failed"]
    assert first[1]["errors"] == [
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {"details": "Re-engagement message"},
        }
    ]
    assert [s["status"] for s in graph.statuses_sent[2:]] == ["sent", "delivered"]


async def test_without_auto_statuses_only_failures_are_posted(
    start: Start, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    graph = await start(auto_statuses=False)
    graph.attach(receiver.url)
    body = {**TO, **VALID["text"]}
    graph.fail_later(131026, "Message undeliverable")
    for _ in range(2):
        assert (await call(http, "POST", messages_url(graph), graph, json=body))[0] == 200
    await graph.settle()
    assert [(s["status"], s["errors"][0]["code"]) for s in graph.statuses_sent] == [("failed", 131026)]


def test_provider_entries() -> None:
    meta = FakeGraphServer(url="http://127.0.0.1:1")
    assert meta.provider_entry("cloud", timeout=3) == {
        "platform": "meta_cloud",
        "name": "cloud",
        "phone_number_id": meta.phone_number_id,
        "waba_id": meta.waba_id,
        "access_token": meta.access_token,
        "app_secret": meta.app_secret,
        "verify_token": meta.verify_token,
        "api_base": "http://127.0.0.1:1",
        "app_id": meta.app_id,
        "timeout": 3,
    }
    d360 = FakeGraphServer(platform="dialog360", url="http://127.0.0.1:2")
    assert d360.provider_entry() == {
        "platform": "dialog360",
        "name": "main",
        "api_key": d360.api_key,
        "webhook_secret": d360.webhook_secret,
        "api_base": "http://127.0.0.1:2",
        "phone_number_id": d360.phone_number_id,
        "waba_id": d360.waba_id,
    }
    with pytest.raises(ValueError):
        FakeGraphServer(platform="twilio")


async def test_resumable_uploads_give_handles_that_media_headers_must_use(
    start: Start, http: aiohttp.ClientSession
) -> None:
    server = await start()
    base = f"{server.url}/v23.0"
    async with http.post(f"{base}/{server.app_id}/uploads", headers=auth(server)) as response:
        assert response.status == 400  # file_name, file_length and file_type are required
    params = {"file_name": "h.jpg", "file_length": "4", "file_type": "image/jpeg"}
    async with http.post(f"{base}/{server.app_id}/uploads", params=params, headers=auth(server)) as response:
        session = (await response.json())["id"]
    assert session.startswith("upload:")
    async with http.post(f"{base}/{session}", data=b"abc", headers={**auth(server), "file_offset": "0"}) as response:
        assert response.status == 400  # 3 bytes of 4
    async with http.post(f"{base}/{session}", data=b"abcd", headers={**auth(server), "file_offset": "0"}) as response:
        handle = (await response.json())["h"]
    assert server.handles[handle].data == b"abcd"

    def template(header_handle: str) -> dict[str, Any]:
        header = {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": [header_handle]}}
        components = [header, {"type": "BODY", "text": "Hi"}]
        return {"name": f"t{len(server.templates)}", "language": "en", "category": "UTILITY", "components": components}

    templates = f"{base}/{server.waba_id}/message_templates"
    async with http.post(templates, json=template("4::made-up"), headers=auth(server)) as response:
        assert response.status == 400
        assert "header_handle" in (await response.json())["error"]["error_data"]["details"]
    async with http.post(templates, json=template(handle), headers=auth(server)) as response:
        assert response.status == 200


async def test_bsuid_recipients_can_be_refused_with_131062(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start(accepts_bsuids=False)
    status, answer = await call(http, "POST", messages_url(graph), graph, json=TO_BSUID)
    assert status == 400 and answer["error"]["code"] == 131062
    assert "phone number" in answer["error"]["error_data"]["details"]
    assert graph.messages == [] and graph.schema_errors == []
    status, _ = await call(http, "POST", messages_url(graph), graph, json={**TO, **VALID["text"]})
    assert status == 200  # by phone number it goes


async def test_a_send_answers_whatsapps_own_form_of_the_number(start: Start, http: aiohttp.ClientSession) -> None:
    graph = await start(wa_ids={"16505551234": "16505550000"})
    status, answer = await call(http, "POST", messages_url(graph), graph, json={**TO, **VALID["text"]})
    assert status == 200 and answer["contacts"] == [{"input": "+16505551234", "wa_id": "16505550000"}]


@pytest.mark.parametrize("platform", ["meta_cloud", "dialog360"])
async def test_listings_are_counted_once_however_many_pages_and_can_be_held(
    start: Start, http: aiohttp.ClientSession, platform: str
) -> None:
    graph = await start(platform=platform)
    for n in range(30):
        graph.add_template({"name": f"t{n:02}", "language": "en_US", "category": "UTILITY", "components": []})
    meta = platform == "meta_cloud"
    url = f"{graph.url}/{V}/{graph.waba_id}/message_templates" if meta else f"{graph.url}/v1/configs/templates"
    status, first = await call(http, "GET", url, graph, params={"limit": "25"})
    assert status == 200
    next_page = first["paging"]["next"] if meta else f"{url}?limit=25&offset=25"
    assert (await call(http, "GET", next_page, graph))[0] == 200
    assert graph.listings == 1

    graph.hold_listings()
    held = asyncio.ensure_future(call(http, "GET", url, graph))

    async def asked() -> bool:
        return graph.listings == 2

    await wait_until(asked)
    assert not held.done()
    graph.release_listings()
    assert (await held)[0] == 200
