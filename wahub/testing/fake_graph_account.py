"""Template, business profile and phone number endpoints of the fake Graph API
(``fake_graph``): listing page by page, creating, editing (back to review) and
deleting templates; reading and updating the profile; registering the number
(``POST /{phone-number-id}/register``) and setting its two-step PIN
(``POST /{phone-number-id}`` with ``pin``), bodies checked against Meta's
OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from wahub.testing.fake_graph_http import Endpoints, graph_error, numeric_id, read_json
from wahub.testing.fake_graph_media import MediaItem
from wahub.testing.fake_graph_schema import describe_errors, schema_validator, spec_document

CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
MEDIA_HEADERS = ("IMAGE", "VIDEO", "DOCUMENT")
PROFILE_FIELDS = ("about", "address", "description", "email", "profile_picture_url", "websites", "vertical")
#: Meta's answer to a PIN that is not six digits (its OpenAPI document's example).
BAD_PIN = "Invalid PIN format. PIN must be exactly 6 digits"


class AccountEndpoints(Endpoints):
    """Templates and the business profile; the fields are ``FakeGraphServer``'s."""

    handles: dict[str, MediaItem]
    templates: list[dict[str, Any]]
    approve_templates: bool
    profile: dict[str, Any]
    listings: int
    _listings_open: asyncio.Event
    phone: dict[str, Any]
    #: Whether the number is registered on the Cloud API (``register`` sets it).
    number_registered: bool = True
    #: The number's two-step verification PIN; None until one is set.
    two_step_pin: str | None = None

    def add_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """Seed the template list; ``id`` and ``status`` (APPROVED) are filled if missing."""
        self.templates.append(template := {"id": numeric_id(), "status": "APPROVED", **template})
        return template

    def hold_listings(self) -> None:
        """Keep template listing requests waiting (a slow API) until ``release_listings``."""
        self._listings_open.clear()

    def release_listings(self) -> None:
        self._listings_open.set()

    async def _templates_page(self, request: web.Request) -> web.StreamResponse:
        query, meta = request.query, self.platform == "meta_cloud"
        wanted = {key: query[key] for key in ("name", "status", "category", "language") if key in query}
        found = [t for t in self.templates if all(str(t.get(k, "")).upper() == v.upper() for k, v in wanted.items())]
        try:
            limit = int(query.get("limit", "25" if meta else "1000"))
            if meta:
                start = int(bytes.fromhex(query["after"]).decode()) + 1 if "after" in query else 0
            else:
                start = int(query.get("offset", "0"))
            if limit < 1 or start < 0:
                raise ValueError(limit, start)
        except ValueError:
            return self._refuse(["$: limit, after and offset must be integers or cursors from a previous page"])
        if start == 0:
            self.listings += 1
        await self._listings_open.wait()
        page = found[start : start + limit]
        if not meta:
            body = {"count": len(page), "limit": limit, "offset": start, "total": len(found), "waba_templates": page}
            return web.json_response(body)
        if "fields" in query:  # like the Graph API: only the fields asked for, and the id
            fields = {"id", *query["fields"].split(",")}
            page = [{key: value for key, value in template.items() if key in fields} for template in page]
        if not page:
            return web.json_response({"data": []})
        paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(start + len(page) - 1)}}
        if start + len(page) < len(found):
            paging["next"] = str(request.url.update_query(limit=limit, after=paging["cursors"]["after"]))
        return web.json_response({"data": page, "paging": paging})

    async def _template_create(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        problem = template_problem(body, edit=False)
        if not problem and any(t["name"] == body["name"] and t["language"] == body["language"] for t in self.templates):
            problem = "$: content in this language already exists"
        if not problem and self.platform == "meta_cloud":
            problem = self._header_handle_problem(body["components"])
        if problem:
            return self._refuse([problem])
        self.templates.append(template := {"parameter_format": "POSITIONAL", **body, "id": numeric_id()})
        template["status"] = self._review_status()
        return web.json_response({"id": template["id"], "status": template["status"], "category": template["category"]})

    async def _template_edit(self, request: web.Request, template: dict[str, Any]) -> web.StreamResponse:
        """``POST /{template-id}``: new components, category or parameter format; back to review."""
        body = await read_json(request)
        problem = template_problem(body, edit=True)
        if not problem and self.platform == "meta_cloud" and "components" in body:
            problem = self._header_handle_problem(body["components"])
        if problem:
            return self._refuse([problem])
        template.update(body)
        template["status"] = self._review_status()
        return web.json_response({"success": True})

    def _review_status(self) -> str:
        return "APPROVED" if self.approve_templates else "PENDING"

    def _header_handle_problem(self, components: list[Any]) -> str | None:
        """A media header's example must be a handle of the Resumable Upload API."""
        for index, component in enumerate(components):
            if str(component.get("type")).upper() == "HEADER" and component.get("format") in MEDIA_HEADERS:
                handles = (component.get("example") or {}).get("header_handle") or [None]
                if handles[0] not in self.handles:
                    return f"$.components[{index}].example.header_handle: not a handle from the Resumable Upload API"
        return None

    async def _template_delete(self, request: web.Request) -> web.StreamResponse:
        name, hsm_id = request.match_info.get("name") or request.query.get("name"), request.query.get("hsm_id")
        if not name:
            return self._refuse(["$.name: the name of the template to delete is required"])
        gone = [t for t in self.templates if t["name"] == name and hsm_id in (None, t["id"])]
        if not gone:
            return graph_error(404, 100, "Invalid parameter", f"no template named {name!r}")
        self.templates = [t for t in self.templates if all(t is not g for g in gone)]
        return web.json_response({"success": True})

    async def _profile_get(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("fields", ",".join(PROFILE_FIELDS)).split(",")
        if unknown := [name for name in wanted if name not in PROFILE_FIELDS]:
            return graph_error(400, 100, f"Tried accessing nonexisting field ({unknown[0]})")
        data = {name: self.profile[name] for name in wanted if name in self.profile}
        return web.json_response({"data": [{**data, "messaging_product": "whatsapp"}]})

    async def _profile_post(self, request: web.Request) -> web.StreamResponse:
        body, schema = await read_json(request), "WhatsAppBusinessProfileUpdateRequest"
        allowed = spec_document()["components"]["schemas"][schema]["properties"]
        problems = [f"$: unknown field {key!r}" for key in body if key not in allowed] if isinstance(body, dict) else []
        if problems := problems + describe_errors(list(schema_validator(schema, True).iter_errors(body))):
            return self._refuse(problems)
        update = {key: value for key, value in body.items() if key != "messaging_product"}
        if "profile_picture_handle" in update and update["profile_picture_handle"] not in self.handles:
            return self._refuse(["$.profile_picture_handle: not a handle from the Resumable Upload API"])
        if "profile_picture_handle" in update:
            update["profile_picture_url"] = f"https://pps.whatsapp.net/v/fake/{update.pop('profile_picture_handle')}"
        self.profile.update(update)
        return web.json_response({"success": True})

    async def _register(self, request: web.Request) -> web.StreamResponse:
        """``POST /{phone-number-id}/register``: a number with a PIN needs that PIN; one without gets it."""
        body = await read_json(request)
        schema = "WhatsAppBusinessPhoneNumberRegistrationRequest"
        if problems := _pin_body_problems(body, schema, _schema_fields(schema)):
            return self._refuse_pin(problems)
        if self.two_step_pin is not None and body["pin"] != self.two_step_pin:
            return graph_error(400, 133005, "Two step verification PIN Mismatch", "The PIN given is not the number's")
        self.two_step_pin, self.number_registered = body["pin"], True
        self.phone["status"] = "CONNECTED"
        return web.json_response({"success": True})

    async def _phone_update(self, request: web.Request) -> web.StreamResponse:
        """``POST /{phone-number-id}`` (``PhoneNumberStatusUpdateRequest``): of its
        settings the fake keeps the two-step ``pin`` (``TwoStepVerificationRequest``)."""
        body = await read_json(request)
        known = _schema_fields("PhoneNumberStatusUpdateRequest")
        others = sorted(set(body) - {"pin"}) if isinstance(body, dict) else []
        if others and not set(others) - known:
            return graph_error(400, 100, f"The fake Graph API keeps only pin of this node's settings, not {others}")
        problems = _pin_body_problems(body, "PhoneNumberStatusUpdateRequest", known)
        problems += [p for p in _pin_body_problems(body, "TwoStepVerificationRequest", known) if p not in problems]
        if problems:
            return self._refuse_pin(problems)
        if not self.number_registered:
            return graph_error(400, 133010, "Account not registered", "Register the number before setting its PIN")
        self.two_step_pin = body["pin"]
        return web.json_response({"success": True})

    def _refuse_pin(self, problems: list[str]) -> web.Response:
        self.schema_errors.extend(problems)
        if any(problem.startswith("$.pin:") for problem in problems):
            return graph_error(400, 100, BAD_PIN, "; ".join(problems))
        return graph_error(400, 100, "Invalid parameter", "; ".join(problems))


def _schema_fields(schema: str) -> frozenset[str]:
    """The properties of ``schema`` in Meta's document."""
    return frozenset(spec_document()["components"]["schemas"][schema]["properties"])


def _pin_body_problems(body: Any, schema: str, allowed: frozenset[str]) -> list[str]:
    """What Meta's document refuses in a body of ``schema``, and fields not in
    ``allowed``; a wrong PIN is described without repeating it."""
    if not isinstance(body, dict):
        return ["$: the body must be a JSON object"]
    problems = [f"$: unknown field {key!r}" for key in body if key not in allowed]
    for error in schema_validator(schema, True).iter_errors(body):
        if list(error.absolute_path) == ["pin"]:
            problems.append(f"$.pin: {BAD_PIN}")
        else:
            problems.extend(describe_errors([error]))
    return list(dict.fromkeys(problems))


def template_problem(body: Any, *, edit: bool) -> str | None:
    """What is wrong with a template create (or edit) body."""
    if not isinstance(body, dict):
        return "$: the body must be a JSON object"
    if edit and (not body or set(body) - {"components", "category", "message_send_ttl_seconds", "parameter_format"}):
        return "$: an edit takes components and/or category"
    for key in () if edit else ("name", "language"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"$.{key}: is required"
    if (not edit or "category" in body) and body.get("category") not in CATEGORIES:
        return f"$.category: must be one of {list(CATEGORIES)}"
    components = body.get("components")
    if (not edit or "components" in body) and not (
        isinstance(components, list)
        and any(isinstance(c, dict) and str(c.get("type")).upper() == "BODY" for c in components)
    ):
        return "$.components: must be a list with a BODY component"
    return None


def _cursor(index: int) -> str:
    return str(index).encode().hex()
