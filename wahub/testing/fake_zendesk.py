"""A fake Zendesk Support API, on a real socket, for the tests of wahub's
``zendesk`` backend and of helpdesk plugins, and the Zendesk side of its
webhooks.

It answers the calls a helpdesk integration makes, in Zendesk's shapes:
``GET /api/v2/users/me.json``, ``POST /api/v2/users/create_or_update.json``
(matched by ``external_id`` or ``email``; 201 created, 200 updated),
``POST /api/v2/tickets.json`` (201), ``GET /api/v2/tickets.json`` (with
``?external_id=``), ``GET|PUT /api/v2/tickets/{id}.json`` (a comment is added
by updating the ticket) and ``GET /api/v2/tickets/{id}/comments.json``
(``sort_order``, ``per_page``, ``page``). Every request needs
``Authorization: Basic base64("<email>/token:<api_token>")`` (else 401) and is
checked as Zendesk would: a ticket needs a comment with a body and a
requester (``requester`` or ``requester_id``), a comment's body is not empty,
its ``author_id`` is a user, a solved ticket has an assignee, and a closed
ticket, or one with 5,000 comments, answers 422 ``RecordInvalid``::

    zendesk = await FakeZendesk().start()
    entry = {"platform": "zendesk", "name": "zendesk", "api_base": zendesk.url,
             "email": zendesk.email, "api_token": zendesk.api_token,
             "webhook_secret": zendesk.webhook_secret}
    ...                                      # start the daemon, then
    zendesk.webhook_url = f"{daemon.url}/crm/zendesk/webhook"
    await zendesk.agent_reply(ticket_id, "On it!")   # a comment, and the signed webhook
    await zendesk.solve(ticket_id)
    zendesk.fail_next(429, retry_after=30)           # the next call is rate limited
    await zendesk.close()

What agents and triggers do (``agent_reply``, ``solve``, the signed
webhooks, ``notify_api_comments``) is in ``wahub.testing.fake_zendesk_agent``.
``fail_next`` answers the next calls with an error, with ``applied`` after
carrying them out (an answer lost on the way); ``hold`` keeps them waiting.
Every API request is recorded in ``requests``, every webhook's answer in
``webhooks``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback
from wahub.testing.fake_faults import Faults, InjectsFaults
from wahub.testing.fake_zendesk_agent import (
    COMMENT_LIMIT,
    WebhookAnswer,
    ZendeskAgentSide,
    signed_headers,
    zendesk_time,
)

__all__ = ["COMMENT_LIMIT", "FakeZendesk", "Recorded", "WebhookAnswer", "signed_headers"]

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """One API request as the fake received it (``json`` None if the body was not JSON)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any


def _invalid(field_name: str, description: str) -> web.Response:
    details = {field_name: [{"description": description, "error": "InvalidValue"}]}
    body = {"error": "RecordInvalid", "description": "Record validation errors", "details": details}
    return web.json_response(body, status=422)


def _not_found() -> web.Response:
    return web.json_response({"error": "RecordNotFound", "description": "Not found"}, status=404)


@dataclass
class FakeZendesk(InjectsFaults, ZendeskAgentSide):
    """See the module's docstring."""

    email: str = "integration@example.com"
    api_token: str = "zd-test-token-0123456789"
    webhook_secret: str = "zd-webhook-secret-0123456789"
    #: Where ``agent_reply`` and ``solve`` post their webhooks.
    webhook_url: str | None = None
    #: Post the comment trigger's webhook also for comments added through the API.
    notify_api_comments: bool = False
    url: str = ""
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    webhooks: list[WebhookAnswer] = field(default_factory=list)
    #: API requests waiting while the fake is held (see ``hold``).
    waiting: int = 0
    _faults: Faults = field(default_factory=Faults)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: Mapping[str, itertools.count[int]] = field(
        default_factory=lambda: {
            "user": itertools.count(1000),
            "ticket": itertools.count(1),
            "comment": itertools.count(7000),
        }
    )
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._released.set()
        self.api_user = self.add_user("wahub integration", email=self.email, role="admin")
        self.agent = self.add_user("Alice Agent", email="alice@example.com", role="agent")

    # -- the test's side ----------------------------------------------------------

    async def start(self) -> FakeZendesk:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v2/users/me.json", self._me)
        app.router.add_post("/api/v2/users/create_or_update.json", self._create_or_update_user)
        app.router.add_post("/api/v2/tickets.json", self._create_ticket)
        app.router.add_get("/api/v2/tickets.json", self._list_tickets)
        app.router.add_get("/api/v2/tickets/{id}.json", self._show_ticket)
        app.router.add_put("/api/v2/tickets/{id}.json", self._update_ticket)
        app.router.add_get("/api/v2/tickets/{id}/comments.json", self._list_comments)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner, self.url = await serve_on_loopback(app)
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        self._released.set()
        await close_fake(self._runner, self._http, self._tasks)

    def add_user(self, name: str, *, email: str | None = None, role: str = "end-user", **extra: Any) -> int:
        user_id = next(self._ids["user"])
        self.users[user_id] = {"id": user_id, "name": name, "email": email, "role": role, **extra}
        return user_id

    def hold(self) -> None:
        """Keep API requests waiting, unanswered, until ``release``: Zendesk down."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # -- the API ---------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), parsed))
        if not self._released.is_set():
            self.waiting += 1
            try:
                await self._released.wait()
            finally:
                self.waiting -= 1
        expected = "Basic " + base64.b64encode(f"{self.email}/token:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        if raw and not isinstance(parsed, dict):
            return web.json_response({"error": "Unprocessable Entity", "description": "Invalid JSON"}, status=400)
        failure = self._faults.take(request.method, request.path)
        if failure is None:
            return await handler(request)
        if failure.applied:
            await handler(request)
        headers = failure.headers()
        description = "Rate limit exceeded" if failure.status == 429 else "The fake failed on purpose"
        return web.json_response({"error": description}, status=failure.status, headers=headers)

    async def _unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "InvalidEndpoint", "description": "Not found"}, status=404)

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response({"user": self.users[self.api_user]})

    async def _create_or_update_user(self, request: web.Request) -> web.Response:
        user = (await request.json()).get("user")
        if not isinstance(user, dict):
            return _invalid("user", "User: is required")
        external_id, email = user.get("external_id"), user.get("email")
        found = next(
            (
                known
                for known in self.users.values()
                if (external_id and known.get("external_id") == external_id) or (email and known.get("email") == email)
            ),
            None,
        )
        if found is not None:
            found.update({key: value for key, value in user.items() if key != "id"})
            return web.json_response({"user": found}, status=200)
        if not isinstance(user.get("name"), str) or not user["name"].strip():
            return _invalid("name", "Name: is too short (minimum one character)")
        fields = {key: value for key, value in user.items() if key not in ("id", "name", "email", "role")}
        user_id = self.add_user(user["name"], email=email, **fields)
        return web.json_response({"user": self.users[user_id]}, status=201)

    async def _create_ticket(self, request: web.Request) -> web.Response:
        ticket = (await request.json()).get("ticket")
        if not isinstance(ticket, dict):
            return _invalid("ticket", "Ticket: is required")
        comment = self._read_comment(ticket.get("comment"), "description", "Description: cannot be blank")
        if isinstance(comment, web.Response):
            return comment
        body, public, author = comment
        requester_id = ticket.get("requester_id")
        if requester_id is None and isinstance(ticket.get("requester"), dict):
            requester = ticket["requester"]
            if not str(requester.get("name") or "").strip():
                return _invalid("requester", "Requester: Name is too short (minimum one character)")
            requester_id = self.add_user(requester["name"], email=requester.get("email"), phone=requester.get("phone"))
        if requester_id not in self.users:
            return _invalid("requester", "Requester: cannot be blank")
        source = ticket.get("via_followup_source_id")
        if source is not None and self.tickets.get(source, {}).get("status") != "closed":
            return _invalid("via_followup_source_id", "Follow-up source: is not a closed ticket")
        problem = _fields_problem(ticket)
        if problem is not None:
            return problem
        ticket_id = next(self._ids["ticket"])
        stored = {
            "id": ticket_id,
            "url": f"{self.url}/api/v2/tickets/{ticket_id}.json",
            "external_id": ticket.get("external_id"),
            "subject": ticket.get("subject") or body[:80],
            "description": body,
            "status": ticket.get("status") or ("open" if ticket.get("assignee_id") else "new"),
            "requester_id": requester_id,
            "submitter_id": self.api_user,
            "assignee_id": ticket.get("assignee_id"),
            "tags": list(ticket.get("tags") or []),
            "custom_fields": list(ticket.get("custom_fields") or []),
            "via_followup_source_id": source,
            "created_at": zendesk_time(),
            "updated_at": zendesk_time(),
        }
        self.tickets[ticket_id] = stored
        self.comments[ticket_id] = []
        self._comment(ticket_id, body, public=public, author_id=author)
        self.api_commented(ticket_id)
        return web.json_response({"ticket": stored}, status=201)

    async def _list_tickets(self, request: web.Request) -> web.Response:
        wanted = request.query.get("external_id")
        tickets = [t for t in self.tickets.values() if wanted is None or t["external_id"] == wanted]
        return web.json_response({"tickets": tickets, "next_page": None, "previous_page": None, "count": len(tickets)})

    async def _show_ticket(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(_path_id(request))
        return _not_found() if ticket is None else web.json_response({"ticket": ticket})

    async def _update_ticket(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(_path_id(request))
        if ticket is None:
            return _not_found()
        changes = (await request.json()).get("ticket")
        if not isinstance(changes, dict):
            return _invalid("ticket", "Ticket: is required")
        if ticket["status"] == "closed":
            return _invalid("status", "Status: closed prevents ticket update")
        status = changes.get("status", ticket["status"])
        assignee = changes.get("assignee_id", ticket["assignee_id"])
        if status not in STATUSES:
            return _invalid("status", f"Status: {status!r} is not a status")
        if status == "solved" and assignee not in self.users:
            return _invalid("assignee", "Assignee: is required when solving a ticket")
        problem = _fields_problem(changes)
        if problem is not None:
            return problem
        audit: dict[str, Any] = {"events": []}
        if "comment" in changes:
            comment = self._read_comment(changes["comment"], "comment", "Comment: body cannot be blank")
            if isinstance(comment, web.Response):
                return comment
            if len(self.comments[ticket["id"]]) >= COMMENT_LIMIT:
                return _invalid("comment", f"Comment: a ticket takes at most {COMMENT_LIMIT} comments")
            body, public, author = comment
            added = self._comment(ticket["id"], body, public=public, author_id=author)
            if public and author == ticket["requester_id"] and "status" not in changes and status != "new":
                status = "open"  # the requester's reply reopens a pending or solved ticket
            audit["events"].append({"type": "Comment", "id": added["id"], "public": public, "author_id": author})
            self.api_commented(ticket["id"])
        ticket.update(status=status, assignee_id=assignee, updated_at=zendesk_time())
        for key in ("subject", "tags", "external_id"):
            if key in changes:
                ticket[key] = changes[key]
        for custom in changes.get("custom_fields") or []:
            self.set_field(ticket["id"], custom["id"], custom.get("value"))
        return web.json_response({"ticket": ticket, "audit": audit})

    async def _list_comments(self, request: web.Request) -> web.Response:
        ticket_id = _path_id(request)
        if ticket_id not in self.tickets:
            return _not_found()
        order = request.query.get("sort_order", "asc")
        try:
            per_page = min(100, max(1, int(request.query.get("per_page", "100"))))
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            return web.json_response({"error": "InvalidPaginationParameter"}, status=400)
        comments = self.comments[ticket_id][:: -1 if order == "desc" else 1]
        chunk = comments[(page - 1) * per_page : page * per_page]
        base = f"{self.url}{request.path}?sort_order={order}&per_page={per_page}&page="
        return web.json_response(
            {
                "comments": chunk,
                "next_page": f"{base}{page + 1}" if page * per_page < len(comments) else None,
                "previous_page": f"{base}{page - 1}" if page > 1 else None,
                "count": len(comments),
            }
        )

    def _read_comment(self, comment: Any, field_name: str, blank: str) -> tuple[str, bool, int] | web.Response:
        """A comment's body, visibility and author (the API user unless given), or the 422 Zendesk answers."""
        body = str(comment.get("body") or comment.get("html_body") or "").strip() if isinstance(comment, dict) else ""
        if not body:
            return _invalid(field_name, blank)
        author = comment.get("author_id") or self.api_user
        if author not in self.users:
            return _invalid("author_id", "Author: is not a user")
        return body, comment.get("public", True) is not False, int(author)

    def _comment(self, ticket_id: int, body: str, *, public: bool, author_id: int) -> dict[str, Any]:
        comment = {
            "id": next(self._ids["comment"]),
            "type": "Comment",
            "author_id": author_id,
            "body": body,
            "html_body": f'<div class="zd-comment"><p>{body}</p></div>',
            "plain_body": body,
            "public": public,
            "attachments": [],
            "created_at": zendesk_time(),
        }
        self.comments[ticket_id].append(comment)
        return comment


def _path_id(request: web.Request) -> int:
    value = request.match_info["id"]
    return int(value) if value.isdigit() else -1


def _fields_problem(ticket: Mapping[str, Any]) -> web.Response | None:
    tags = ticket.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag and " " not in tag for tag in tags):
        return _invalid("tags", "Tags: each tag is one word")
    external_id = ticket.get("external_id")
    if external_id is not None and not isinstance(external_id, str):
        return _invalid("external_id", "External ID: is not a string")
    fields = ticket.get("custom_fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, dict) and isinstance(f.get("id"), int) for f in fields):
        return _invalid("custom_fields", "Custom fields: each is {id, value}")
    return None
