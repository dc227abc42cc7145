"""The Content API of the fake Twilio cloud (``fake_twilio``): content
resources (``HX...``) and their WhatsApp approval requests, JSON bodies
checked as Twilio checks them, answered in Twilio's shapes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: The content types the Content API knows.
CONTENT_TYPES = frozenset(
    {
        *("twilio/text", "twilio/media", "twilio/location", "twilio/list-picker", "twilio/call-to-action"),
        *("twilio/quick-reply", "twilio/card", "twilio/catalog", "twilio/carousel", "twilio/flows"),
        *("whatsapp/card", "whatsapp/authentication", "whatsapp/flows"),
    }
)
_CATEGORIES = ("UTILITY", "MARKETING", "AUTHENTICATION")


def twilio_error_body(status: int, code: int, message: str) -> web.Response:
    """Twilio's error answer: ``{code, message, more_info, status}``."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class ContentStore:
    """Content resources and approvals; ``base`` is the fake's URL (for ``url`` fields)."""

    account_sid: str
    base: str = ""
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, friendly_name: str, body: str, *, language: str = "en", status: str | None = None) -> str:
        """A content resource made in the Console (a ``twilio/text``), approved with ``status`` when given."""
        content_sid = self._create(
            {"friendly_name": friendly_name, "language": language, "types": {"twilio/text": {"body": body}}}
        )
        if status is not None:
            self.approvals[content_sid] = self._approval(friendly_name, "UTILITY", status)
        return content_sid

    def approve(self, content_sid: str, status: str = "approved", reason: str = "") -> None:
        self.approvals[content_sid].update(status=status, rejection_reason=reason)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/Content", self._post),
            web.get("/v1/Content", self._list),
            web.get("/v1/ContentAndApprovals", self._list_with_approvals),
            web.get("/v1/Content/{sid}", self._get),
            web.delete("/v1/Content/{sid}", self._delete),
            web.post("/v1/Content/{sid}/ApprovalRequests/whatsapp", self._submit),
            web.get("/v1/Content/{sid}/ApprovalRequests", self._approval_of),
        ]

    def _create(self, body: dict[str, Any]) -> str:
        content_sid = sid("HX")
        self.contents[content_sid] = {
            "sid": content_sid,
            "account_sid": self.account_sid,
            "friendly_name": body["friendly_name"],
            "language": body["language"],
            "variables": body.get("variables") or {},
            "types": body["types"],
            "url": f"{self.base}/v1/Content/{content_sid}",
            "date_created": "2026-01-01T00:00:00Z",
            "date_updated": "2026-01-01T00:00:00Z",
        }
        return content_sid

    @staticmethod
    def _approval(name: str, category: str, status: str) -> dict[str, Any]:
        return {
            "name": name,
            "category": category,
            "status": status,
            "rejection_reason": "",
            "allow_category_change": True,
        }

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return twilio_error_body(400, 20001, "The request body is not valid JSON")
        problem = _content_problem(body)
        if problem:
            return twilio_error_body(400, 20001, problem)
        return web.json_response(self.contents[self._create(body)], status=201)

    def _page(self, request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
        size = int(request.query.get("PageSize", "50"))
        page = int(request.query.get("Page", "0"))
        chunk = items[page * size : (page + 1) * size]
        following = (
            f"{self.base}{request.path}?PageSize={size}&Page={page + 1}" if len(items) > (page + 1) * size else None
        )
        meta = {"page": page, "page_size": size, "key": key, "next_page_url": following, "previous_page_url": None}
        return web.json_response({key: chunk, "meta": meta})

    async def _list(self, request: web.Request) -> web.Response:
        return self._page(request, "contents", list(self.contents.values()))

    async def _list_with_approvals(self, request: web.Request) -> web.Response:
        items = [
            {**content, "approval_requests": self.approvals.get(sid_, {})} for sid_, content in self.contents.items()
        ]
        return self._page(request, "contents", items)

    async def _get(self, request: web.Request) -> web.Response:
        found = self.contents.get(request.match_info["sid"])
        if found is None:
            return twilio_error_body(404, 20404, "The requested resource was not found")
        return web.json_response(found)

    async def _delete(self, request: web.Request) -> web.Response:
        if self.contents.pop(request.match_info["sid"], None) is None:
            return twilio_error_body(404, 20404, "The requested resource was not found")
        self.approvals.pop(request.match_info["sid"], None)
        return web.Response(status=204)

    async def _submit(self, request: web.Request) -> web.Response:
        content = self.contents.get(request.match_info["sid"])
        if content is None:
            return twilio_error_body(404, 20404, "The requested resource was not found")
        try:
            body = await request.json()
        except ValueError:
            return twilio_error_body(400, 20001, "The request body is not valid JSON")
        name, category = body.get("name"), body.get("category")
        if not isinstance(name, str) or not name or not name.replace("_", "").isalnum() or name != name.lower():
            return twilio_error_body(400, 20001, "name must be lowercase letters, digits and underscores")
        if category not in _CATEGORIES:
            return twilio_error_body(400, 20001, f"category must be one of {', '.join(_CATEGORIES)}")
        if "twilio/list-picker" in content["types"]:
            return twilio_error_body(400, 20001, "twilio/list-picker content cannot be submitted for approval")
        approval = self._approval(name, category, "received")
        self.approvals[content["sid"]] = approval
        return web.json_response({**approval, "content_type": next(iter(content["types"]))}, status=201)

    async def _approval_of(self, request: web.Request) -> web.Response:
        if request.match_info["sid"] not in self.contents:
            return twilio_error_body(404, 20404, "The requested resource was not found")
        whatsapp = self.approvals.get(request.match_info["sid"], {})
        return web.json_response({"sid": request.match_info["sid"], "whatsapp": whatsapp})


def _content_problem(body: Any) -> str | None:
    """What the Content API refuses in a create body, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    for key in ("friendly_name", "language"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key} is required"
    types = body.get("types")
    if not isinstance(types, dict) or not types:
        return "types is required"
    unknown = sorted(set(types) - CONTENT_TYPES)
    if unknown:
        return f"unknown content types {unknown}"
    variables = body.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        return "variables must map names to default strings"
    for kind, shape in types.items():
        if not isinstance(shape, dict):
            return f"{kind} must be an object"
        if kind in ("twilio/text", "twilio/quick-reply", "twilio/call-to-action") and not shape.get("body"):
            return f"{kind}.body is required"
        actions = shape.get("actions")
        if kind == "twilio/quick-reply" and (not isinstance(actions, list) or not 1 <= len(actions) <= 10):
            return "twilio/quick-reply needs 1 to 10 actions"
        for action in actions or []:
            if not isinstance(action, dict) or not action.get("title"):
                return f"{kind}: every action needs a title"
        if kind == "twilio/list-picker":
            items = shape.get("items")
            if not shape.get("body") or not shape.get("button"):
                return "twilio/list-picker needs a body and a button"
            if not isinstance(items, list) or not 1 <= len(items) <= 10:
                return "twilio/list-picker needs 1 to 10 items"
            for item in items:
                if not isinstance(item, dict) or not item.get("item") or not item.get("id"):
                    return "twilio/list-picker: every item needs an item and an id"
                if len(item["item"]) > 24 or len(item["id"]) > 200 or len(item.get("description", "")) > 72:
                    return "twilio/list-picker: an item is too long (item 24, id 200, description 72 characters)"
    return None
