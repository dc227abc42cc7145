"""Templates as Twilio keeps them: Content API resources (``HX...``), pure
translations between them and the shapes wahub stores and sends.

- ``content_definition``: a template in the Cloud API's create shape (name,
  language, category, components) as a ``POST /v1/Content`` body. wahub
  writes a body with its quick-reply or call-to-action buttons
  (``twilio/text``, ``twilio/quick-reply``, ``twilio/call-to-action``); a
  header or footer is refused, naming the component: such content is made
  in the Twilio Console and synced.
- ``listed_template``: an item of ``GET /v1/ContentAndApprovals`` as a stored
  template, its WhatsApp approval status in Meta's words (``APPROVED``...),
  its body and buttons as Meta's listing components so the send policy can
  check the parameters, and its ``HX`` SID as the external id.
- ``content_variables``: a template message's parameters as the
  ``ContentVariables`` JSON object: positional parameters numbered from 1 in
  the order header, body, buttons (whatever order the message lists them in), named ones by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wahub.core.errors import ProviderError
from wahub.core.storage.policy import Template

#: Content types that carry a template's body text, in the order they are read.
_BODY_TYPES = ("twilio/text", "twilio/quick-reply", "twilio/call-to-action", "twilio/list-picker", "twilio/media")
_CTA_TYPES = {"URL": "url", "PHONE_NUMBER": "phone_number"}


def _refused(why: str) -> ProviderError:
    return ProviderError(f"Twilio template: {why}", code="unsupported")


def content_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The Content API body creating ``definition`` (Meta's template create shape)."""
    name, language = definition.get("name"), definition.get("language")
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        raise _refused("the definition needs a name and a language")
    body: str | None = None
    variables: dict[str, str] = {}
    buttons: list[dict[str, Any]] = []
    for component in definition.get("components") or []:
        kind = str(component.get("type", "")).upper() if isinstance(component, dict) else ""
        if kind == "BODY":
            body = str(component.get("text") or "")
            variables = _examples(component.get("example"))
        elif kind == "BUTTONS":
            buttons = [button for button in component.get("buttons") or [] if isinstance(button, dict)]
        else:
            raise _refused(
                f"a {kind or 'nameless'} component cannot be created by wahub (it writes a body and buttons); "
                "create the content in the Twilio Console and run `wahub templates sync`"
            )
    if not body:
        raise _refused("the definition has no BODY component with text")
    types = {"twilio/text": {"body": body}} if not buttons else _with_buttons(body, buttons)
    created: dict[str, Any] = {"friendly_name": name, "language": language, "types": types}
    if variables:
        created["variables"] = variables
    return created


def _examples(example: Any) -> dict[str, str]:
    """The sample values of a body's placeholders, which Twilio needs as the content's ``variables``."""
    if not isinstance(example, dict):
        return {}
    named = example.get("body_text_named_params")
    if isinstance(named, list):
        return {str(item["param_name"]): str(item["example"]) for item in named if isinstance(item, dict)}
    positional = example.get("body_text")
    values = positional[0] if isinstance(positional, list) and positional else []
    return {str(number): str(value) for number, value in enumerate(values, 1)}


def _with_buttons(body: str, buttons: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {str(button.get("type", "")).upper() for button in buttons}
    if kinds == {"QUICK_REPLY"}:
        actions = [{"title": str(b["text"]), "id": str(b.get("payload") or b["text"])} for b in buttons]
        return {"twilio/quick-reply": {"body": body, "actions": actions}}
    if kinds <= set(_CTA_TYPES):
        actions = []
        for button in buttons:
            kind = str(button["type"]).upper()
            value_key = "url" if kind == "URL" else "phone"
            actions.append({"type": kind, "title": str(button["text"]), value_key: str(button[_CTA_TYPES[kind]])})
        return {"twilio/call-to-action": {"body": body, "actions": actions}}
    raise _refused(f"buttons of the kinds {sorted(kinds)} cannot share one content; use quick replies or links")


def listed_template(item: Mapping[str, Any]) -> tuple[Template, dict[str, Any]]:
    """A ``ContentAndApprovals`` item as a stored template and its details."""
    approval = item.get("approval_requests")
    approval = approval if isinstance(approval, dict) else {}
    name = str(approval.get("name") or item.get("friendly_name") or item["sid"])
    status = str(approval.get("status") or "unsubmitted").upper()
    category = str(approval.get("category") or "").upper()
    template = Template(name, str(item.get("language") or ""), category, status)
    details = {"components": _components(item.get("types")), "external_id": str(item["sid"])}
    return template, details


def _components(types: Any) -> list[dict[str, Any]] | None:
    if not isinstance(types, dict):
        return None
    for kind in _BODY_TYPES:
        found = types.get(kind)
        if isinstance(found, dict) and isinstance(found.get("body"), str):
            components: list[dict[str, Any]] = [{"type": "BODY", "text": found["body"]}]
            buttons = [_button(action) for action in found.get("actions") or [] if isinstance(action, dict)]
            if buttons:
                components.append({"type": "BUTTONS", "buttons": buttons})
            return components
    return None


def _button(action: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(action.get("type") or "QUICK_REPLY").upper()
    if kind == "URL":
        return {"type": "URL", "text": action.get("title"), "url": action.get("url")}
    if kind == "PHONE_NUMBER":
        return {"type": "PHONE_NUMBER", "text": action.get("title"), "phone_number": action.get("phone")}
    return {"type": "QUICK_REPLY", "text": action.get("title")}


def content_variables(template: Mapping[str, Any]) -> dict[str, str]:
    """The ``ContentVariables`` of a template message (its ``template`` object)."""
    variables: dict[str, str] = {}
    position = 0
    for component in sorted(template.get("components") or [], key=_component_order):
        for parameter in component.get("parameters") or []:
            kind = parameter.get("type")
            if kind != "text":
                raise _refused(
                    f"a {kind} parameter cannot be sent: Twilio content variables are text "
                    "(put media and locations in the content itself)"
                )
            if "parameter_name" in parameter:
                variables[str(parameter["parameter_name"])] = str(parameter["text"])
            else:
                position += 1
                variables[str(position)] = str(parameter["text"])
    return variables


#: Positional variables are numbered through the header, the body, then the buttons,
#: whatever order the message lists its components in.
_ORDER = {"header": 0, "body": 1, "button": 2}


def _component_order(component: Mapping[str, Any]) -> int:
    return _ORDER.get(str(component.get("type", "")).lower(), 3)
