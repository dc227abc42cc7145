"""Canonical messages (the Cloud API's shapes) as Bird Channels API bodies.

``{"receiver": {"contacts": [{"identifierKey": "phonenumber",
"identifierValue": "+E164"}]}, "body": {...}}``, with per type:

- text: ``body.text.text``; reply buttons: the text (header, body and footer
  joined) with ``text.actions[]`` postbacks (the button's title and id);
- a list: ``body.list`` with its text and sections of postback actions;
- image: ``body.image.images[{mediaUrl}]`` and the caption in ``image.text``;
  documents, audio and video: ``body.file.files[{mediaUrl, contentType, filename}]``;
- location: ``body.location.coordinates`` and its label and address;
- a template: ``template{projectId, version, locale, parameters[]}`` instead of a body.

A reply names the message it answers in ``replyTo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wahub.core.errors import ErrorKind, ErrorMeaning, ProviderError
from wahub.core.models import OutgoingMessage

#: Canonical media types Bird sends as ``file``.
FILE_TYPES = ("document", "audio", "video")


@dataclass(frozen=True)
class Media:
    """A message's file as Bird fetches it: its URL, type and name."""

    url: str
    mime_type: str
    filename: str | None = None


@dataclass(frozen=True)
class TemplateRef:
    """A Bird template: its project, the approved version and the locale to send."""

    project_id: str
    version: str
    locale: str


def unsupported(text: str) -> ProviderError:
    """A message Bird cannot carry in this form: refused for good."""
    return ProviderError(text, code="unsupported", meaning=ErrorMeaning(ErrorKind.PERMANENT, text))


def receiver(phone: str) -> dict[str, Any]:
    return {"contacts": [{"identifierKey": "phonenumber", "identifierValue": f"+{phone}"}]}


def render(
    message: OutgoingMessage, phone: str, *, media: Media | None = None, template: TemplateRef | None = None
) -> dict[str, Any]:
    """The request body sending ``message`` to ``phone`` (digits)."""
    body: dict[str, Any] = {"receiver": receiver(phone)}
    content: dict[str, Any] = message.content[message.type]
    if message.type == "template":
        if template is None:
            raise unsupported("a template send needs its Bird project and version")
        body["template"] = _template(content, template)
    else:
        body["body"] = _body(message.type, content, media)
    if message.context_id:
        body["replyTo"] = {"id": message.context_id, "type": "message"}
    return body


def _body(kind: str, content: Any, media: Media | None) -> dict[str, Any]:
    if kind == "text":
        return {"type": "text", "text": {"text": content["body"]}}
    if kind == "interactive":
        return _interactive(content)
    if kind == "location":
        return {"type": "location", "location": _location(content)}
    if media is None:
        raise unsupported(f"{kind} messages are not sent through Bird")
    caption = content.get("caption")
    if kind == "image":
        return {
            "type": "image",
            "image": {"images": [{"mediaUrl": media.url}], **({"text": caption} if caption else {})},
        }
    if kind in FILE_TYPES:
        file: dict[str, Any] = {"mediaUrl": media.url, "contentType": media.mime_type}
        filename = content.get("filename") or media.filename
        if filename and kind == "document":
            file["filename"] = filename
        return {"type": "file", "file": {"files": [file], **({"text": caption} if caption else {})}}
    raise unsupported(f"{kind} messages are not sent through Bird")


def _joined(interactive: dict[str, Any]) -> str:
    """The interactive message's header text, body and footer as one text."""
    header = interactive.get("header")
    if isinstance(header, dict) and header.get("type", "text") != "text":
        raise unsupported("Bird's buttons and lists carry text only: a media header cannot be sent")
    parts = (
        header.get("text") if isinstance(header, dict) else None,
        interactive["body"]["text"],
        (interactive.get("footer") or {}).get("text"),
    )
    return "\n\n".join(part for part in parts if part)


def _postback(title: str, payload: str) -> dict[str, Any]:
    return {"type": "postback", "postback": {"text": title, "payload": payload}}


def _interactive(interactive: dict[str, Any]) -> dict[str, Any]:
    kind, action = interactive["type"], interactive["action"]
    if kind == "button":
        actions = [_postback(b["reply"]["title"], b["reply"]["id"]) for b in action["buttons"]]
        return {"type": "text", "text": {"text": _joined(interactive), "actions": actions}}
    if kind == "list":
        sections = []
        for section in action["sections"]:
            rows = []
            for row in section["rows"]:
                item = _postback(row["title"], row["id"])
                if row.get("description"):
                    item["postback"]["description"] = row["description"]
                rows.append(item)
            sections.append({**({"title": section["title"]} if section.get("title") else {}), "actions": rows})
        listed = {"text": _joined(interactive), "button": action["button"], "sections": sections}
        return {"type": "list", "list": listed}
    raise unsupported(f"interactive {kind} messages are not sent through Bird")


def _location(location: dict[str, Any]) -> dict[str, Any]:
    place = {ours: location[key] for ours, key in (("label", "name"), ("address", "address")) if location.get(key)}
    coordinates = {"latitude": float(location["latitude"]), "longitude": float(location["longitude"])}
    return {"coordinates": coordinates, **({"location": place} if place else {})}


def _template(template: dict[str, Any], ref: TemplateRef) -> dict[str, Any]:
    """Bird's template object: the body's parameters by name (a named
    parameter's ``parameter_name``, else its position from 1) as strings."""
    parameters: list[dict[str, str]] = []
    for component in template.get("components") or []:
        kind = str(component.get("type", "")).lower()
        given = component.get("parameters") or []
        if kind == "body" or (kind == "header" and all(p.get("type") == "text" for p in given)):
            prefix = "" if kind == "body" else "header."
            for position, parameter in enumerate(given, 1):
                key = parameter.get("parameter_name") or str(position)
                parameters.append({"type": "string", "key": f"{prefix}{key}", "value": _value(parameter)})
        elif given:
            raise unsupported(f"Bird templates take text parameters only; the {kind} component has others")
    return {"projectId": ref.project_id, "version": ref.version, "locale": ref.locale, "parameters": parameters}


def _value(parameter: dict[str, Any]) -> str:
    kind = parameter.get("type", "text")
    if kind == "text":
        return str(parameter["text"])
    if kind == "currency":
        return str(parameter["currency"].get("fallback_value", ""))
    if kind == "date_time":
        return str(parameter["date_time"].get("fallback_value", ""))
    raise unsupported(f"Bird templates take text parameters only, not {kind}")
