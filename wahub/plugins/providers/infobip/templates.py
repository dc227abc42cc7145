"""Templates between the Cloud API's definition (what ``wahub templates create``
reads and the ``templates`` table keeps) and Infobip's ``structure``
(``/whatsapp/2/senders/{sender}/templates``).

Meta's components (``HEADER``, ``BODY``, ``FOOTER``, ``BUTTONS``) become
Infobip's ``header``, ``body`` (with ``examples``), ``footer`` and
``buttons``, and the listed templates come back as Meta's components, so the
send policy counts their parameters as for any provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wahub.core.errors import ProviderError

_MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")


def structure_of(definition: Mapping[str, Any]) -> dict[str, Any]:
    """Infobip's create body for a Cloud API template definition."""
    for key in ("name", "language", "category"):
        if not isinstance(definition.get(key), str) or not definition[key]:
            raise ProviderError(f"the template definition needs {key!r}", code="BAD_REQUEST")
    structure: dict[str, Any] = {}
    for component in definition.get("components") or []:
        kind = str(component.get("type", "")).upper()
        example = component.get("example") if isinstance(component.get("example"), dict) else {}
        if kind == "HEADER":
            structure["header"] = _header(component, example)
        elif kind == "BODY":
            body: dict[str, Any] = {"text": component["text"]}
            samples = example.get("body_text")
            if isinstance(samples, list) and samples and isinstance(samples[0], list):
                body["examples"] = [str(sample) for sample in samples[0]]
            structure["body"] = body
        elif kind == "FOOTER":
            structure["footer"] = {"text": component["text"]}
        elif kind == "BUTTONS":
            structure["buttons"] = [_button(button) for button in component.get("buttons") or []]
        else:
            raise ProviderError(f"infobip templates have no {kind or '?'} component", code="BAD_REQUEST")
    if "body" not in structure:
        raise ProviderError("the template definition needs a BODY component", code="BAD_REQUEST")
    return {
        "name": definition["name"],
        "language": definition["language"],
        "category": definition["category"],
        "structure": structure,
    }


def _header(component: Mapping[str, Any], example: Mapping[str, Any]) -> dict[str, Any]:
    format_ = str(component.get("format", "TEXT")).upper()
    if format_ == "TEXT":
        header: dict[str, Any] = {"format": "TEXT", "text": component["text"]}
        samples = example.get("header_text")
        if isinstance(samples, list) and samples:
            header["example"] = str(samples[0])
        return header
    if format_ in _MEDIA_FORMATS:
        samples = example.get("header_url") or example.get("header_handle")
        if not isinstance(samples, list) or not samples:
            raise ProviderError(f"a {format_} header needs the URL of a sample file in example.header_url")
        return {"format": format_, "example": str(samples[0])}
    if format_ == "LOCATION":
        return {"format": "LOCATION"}
    raise ProviderError(f"infobip templates have no {format_} header", code="BAD_REQUEST")


def _button(button: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(button.get("type", "")).upper()
    if kind == "QUICK_REPLY":
        return {"type": "QUICK_REPLY", "text": button["text"]}
    if kind == "URL":
        found = {"type": "URL", "text": button["text"], "url": button["url"]}
        if isinstance(button.get("example"), list) and button["example"]:
            found["example"] = str(button["example"][0])
        return found
    if kind == "PHONE_NUMBER":
        return {"type": "PHONE_NUMBER", "text": button["text"], "phoneNumber": button["phone_number"]}
    if kind == "COPY_CODE":
        return {"type": "COPY_CODE", "example": str(button.get("example", ""))}
    raise ProviderError(f"infobip templates have no {kind or '?'} button", code="BAD_REQUEST")


def components_of(structure: Any) -> list[dict[str, Any]]:
    """A listed template's ``structure`` as Meta's components."""
    if not isinstance(structure, dict):
        return []
    components: list[dict[str, Any]] = []
    header = structure.get("header")
    if isinstance(header, dict):
        found = {"type": "HEADER", "format": str(header.get("format", "TEXT")).upper()}
        if isinstance(header.get("text"), str):
            found["text"] = header["text"]
        components.append(found)
    body = structure.get("body")
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        components.append({"type": "BODY", "text": body["text"]})
    footer = structure.get("footer")
    if isinstance(footer, dict) and isinstance(footer.get("text"), str):
        components.append({"type": "FOOTER", "text": footer["text"]})
    buttons = structure.get("buttons")
    if isinstance(buttons, list) and buttons:
        listed = []
        for button in buttons:
            if isinstance(button, dict):
                item = {"type": str(button.get("type", "")).upper(), "text": str(button.get("text", ""))}
                for ours, theirs in (("url", "url"), ("phone_number", "phoneNumber")):
                    if theirs in button:
                        item[ours] = button[theirs]
                listed.append(item)
        components.append({"type": "BUTTONS", "buttons": listed})
    return components
