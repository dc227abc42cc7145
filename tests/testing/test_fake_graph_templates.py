"""The fake Graph API's template review: creates and edits wait in PENDING, or
are approved at once when the fake is told to; an edit of one language keeps
its id; a delete by id removes one language."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wahub.testing.fake_graph import FakeGraphServer

V = "v23.0"
BODY = {"type": "BODY", "text": "Hi {{1}}", "example": {"body_text": [["Ana"]]}}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, graph: FakeGraphServer, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {graph.access_token}"}
    async with http.request(method, f"{graph.url}/{V}/{path}", headers=headers, **kwargs) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(("approve", "status"), [(False, "PENDING"), (True, "APPROVED")])
async def test_an_edit_goes_back_to_review_unless_approved_at_once(
    http: aiohttp.ClientSession, approve: bool, status: str
) -> None:
    graph = await FakeGraphServer(approve_templates=approve).start()
    try:
        seeded = graph.add_template({"name": "notice", "language": "en", "category": "UTILITY", "components": [BODY]})
        assert seeded["status"] == "APPROVED"
        edit = {"components": [{**BODY, "text": "Hello {{1}}"}], "category": "MARKETING"}
        assert await call(http, graph, "POST", seeded["id"], json=edit) == (200, {"success": True})
        assert (seeded["status"], seeded["category"], seeded["components"][0]["text"]) == (
            status,
            "MARKETING",
            "Hello {{1}}",
        )
        create = {"name": "notice", "language": "pt_BR", "category": "UTILITY", "components": [BODY]}
        answer = await call(http, graph, "POST", f"{graph.waba_id}/message_templates", json=create)
        assert answer == (200, {"id": answer[1]["id"], "status": status, "category": "UTILITY"})
    finally:
        await graph.close()


async def test_an_edit_is_checked_like_a_create(http: aiohttp.ClientSession) -> None:
    graph = await FakeGraphServer().start()
    try:
        seeded = graph.add_template({"name": "notice", "language": "en", "category": "UTILITY", "components": [BODY]})
        header = {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["made-up"]}}
        for bad, problem in (
            ({"components": [{"type": "FOOTER", "text": "x"}]}, "$.components: must be a list with a BODY"),
            ({"category": "PROMO"}, "$.category: must be one of"),
            ({"components": [header, BODY]}, "$.components[0].example.header_handle: not a handle"),
        ):
            status, answer = await call(http, graph, "POST", seeded["id"], json=bad)
            assert status == 400 and problem in answer["error"]["error_data"]["details"]
        assert seeded["status"] == "APPROVED" and seeded["components"] == [BODY]
    finally:
        await graph.close()


async def test_a_delete_by_id_removes_one_language(http: aiohttp.ClientSession) -> None:
    graph = await FakeGraphServer().start()
    try:
        for language in ("en", "es"):
            graph.add_template({"name": "notice", "language": language, "category": "UTILITY", "components": [BODY]})
        english = graph.templates[0]["id"]
        path = f"{graph.waba_id}/message_templates"
        assert await call(http, graph, "DELETE", path, params={"name": "notice", "hsm_id": english}) == (
            200,
            {"success": True},
        )
        assert [template["language"] for template in graph.templates] == ["es"]
    finally:
        await graph.close()
