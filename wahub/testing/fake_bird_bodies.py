"""What the fake Bird checks in a Channels API send body, and what it reads of
it (``wahub.testing.fake_bird``): the receiver, then either a ``body`` of a
type Bird carries or a ``template``. Each problem is one line, as Bird's
``InvalidPayload`` answer lists them in ``details``."""

from __future__ import annotations

import re
from typing import Any

PHONE = re.compile(r"^\+[1-9]\d{4,19}$")
BODY_TYPES = ("text", "image", "file", "location", "list")


def body_problems(data: Any) -> list[str]:
    """Every way ``data`` is not a send body Bird accepts (empty when it is one)."""
    if not isinstance(data, dict):
        return ["the body is not a JSON object"]
    problems = _receiver_problems(data.get("receiver"))
    has_body, has_template = "body" in data, "template" in data
    if has_body == has_template:
        problems.append("give exactly one of body and template")
    elif has_body:
        problems += _body_problems(data["body"])
    else:
        problems += _template_problems(data["template"])
    reply_to = data.get("replyTo")
    if reply_to is not None and (not isinstance(reply_to, dict) or not _text(reply_to.get("id"))):
        problems.append("replyTo.id must be a message id")
    unknown = sorted(set(data) - {"receiver", "body", "template", "replyTo", "reference", "meta"})
    problems += [f"{key}: unknown field" for key in unknown]
    return problems


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _receiver_problems(receiver: Any) -> list[str]:
    contacts = receiver.get("contacts") if isinstance(receiver, dict) else None
    if not isinstance(contacts, list) or len(contacts) != 1 or not isinstance(contacts[0], dict):
        return ["receiver.contacts must hold one contact"]
    contact = contacts[0]
    if contact.get("identifierKey") != "phonenumber":
        return ["receiver.contacts[0].identifierKey must be phonenumber"]
    if not isinstance(contact.get("identifierValue"), str) or not PHONE.match(contact["identifierValue"]):
        return ["receiver.contacts[0].identifierValue must be a phone number in +E.164"]
    return []


def _body_problems(body: Any) -> list[str]:
    kind = body.get("type") if isinstance(body, dict) else None
    if kind not in BODY_TYPES:
        return [f"body.type must be one of {', '.join(BODY_TYPES)}"]
    inner = body.get(kind)
    if not isinstance(inner, dict):
        return [f"body.{kind} must be an object"]
    check = {"text": _text_problems, "image": _image_problems, "file": _file_problems}
    check.update({"location": _location_problems, "list": _list_problems})
    return [f"body.{kind}.{line}" for line in check[kind](inner)]


def _text_problems(text: dict[str, Any]) -> list[str]:
    problems = [] if _text(text.get("text")) else ["text is required"]
    return problems + _actions_problems(text.get("actions"), "actions", required=False)


def _actions_problems(actions: Any, where: str, *, required: bool) -> list[str]:
    if actions is None and not required:
        return []
    if not isinstance(actions, list) or not actions:
        return [f"{where} must be a non-empty list"]
    problems = []
    for index, action in enumerate(actions):
        postback = action.get("postback") if isinstance(action, dict) else None
        if not isinstance(action, dict) or action.get("type") != "postback" or not isinstance(postback, dict):
            problems.append(f"{where}[{index}] must be a postback action")
        elif not _text(postback.get("text")) or not _text(postback.get("payload")):
            problems.append(f"{where}[{index}].postback needs text and payload")
    return problems


def _image_problems(image: dict[str, Any]) -> list[str]:
    images = image.get("images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], dict):
        return ["images must hold one image"]
    return [] if _url(images[0].get("mediaUrl")) else ["images[0].mediaUrl must be an http(s) URL"]


def _file_problems(file: dict[str, Any]) -> list[str]:
    files = file.get("files")
    if not isinstance(files, list) or len(files) != 1 or not isinstance(files[0], dict):
        return ["files must hold one file"]
    problems = [] if _url(files[0].get("mediaUrl")) else ["files[0].mediaUrl must be an http(s) URL"]
    content_type = files[0].get("contentType")
    if not isinstance(content_type, str) or "/" not in content_type:
        problems.append("files[0].contentType must be a media type")
    return problems


def _url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _location_problems(location: dict[str, Any]) -> list[str]:
    coordinates = location.get("coordinates")
    if not isinstance(coordinates, dict):
        return ["coordinates are required"]
    problems = []
    for key, limit in (("latitude", 90), ("longitude", 180)):
        value = coordinates.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > limit:
            problems.append(f"coordinates.{key} must be a number within ±{limit}")
    return problems


def _list_problems(listed: dict[str, Any]) -> list[str]:
    problems = [] if _text(listed.get("text")) else ["text is required"]
    sections = listed.get("sections")
    if not isinstance(sections, list) or not sections:
        return [*problems, "sections must be a non-empty list"]
    for index, section in enumerate(sections):
        actions = section.get("actions") if isinstance(section, dict) else None
        problems += _actions_problems(actions, f"sections[{index}].actions", required=True)
    return problems


def _template_problems(template: Any) -> list[str]:
    if not isinstance(template, dict):
        return ["template must be an object"]
    problems = [
        f"template.{key} is required" for key in ("projectId", "version", "locale") if not _text(template.get(key))
    ]
    parameters = template.get("parameters", [])
    if not isinstance(parameters, list):
        return [*problems, "template.parameters must be a list"]
    for index, parameter in enumerate(parameters):
        fields = (parameter.get(key) for key in ("key", "value")) if isinstance(parameter, dict) else ()
        if not isinstance(parameter, dict) or parameter.get("type") != "string" or not all(map(_text, fields)):
            problems.append(f"template.parameters[{index}] must be {{type: string, key, value}}")
    return problems


def canonical_kind(data: dict[str, Any]) -> tuple[str, str]:
    """The canonical kind of an accepted body and what a person reads of it."""
    if "template" in data:
        return "template", str(data["template"]["projectId"])
    body = data["body"]
    kind, inner = body["type"], body[body["type"]]
    if kind == "text":
        return ("interactive" if inner.get("actions") else "text"), str(inner["text"])
    if kind == "list":
        return "interactive", str(inner["text"])
    if kind == "file":
        main = str(inner["files"][0]["contentType"]).split("/")[0]
        return {"audio": "audio", "video": "video"}.get(main, "document"), str(inner.get("text", ""))
    return kind, str(inner.get("text", ""))
