"""A template send as the sandbox user reads it: the stored template's
components with the send's parameters filled in.

The header shows in bold, then the body, then the footer in italics, as
WhatsApp sets them apart; quick replies become the chat's reply buttons (a tap
answers with the button's payload as its id), and URL, phone and copy-code
buttons become text lines under the message. A placeholder the send gives no
value for fails the send as WhatsApp does (code ``132000``). Pure functions:
the provider looks the template up and sends what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wahub.core.canonical.placeholders import PLACEHOLDER
from wahub.core.errors import ProviderError

#: WhatsApp's code for a template send whose parameters do not fit the template.
PARAMETERS_MISMATCH = "132000"
#: What a media header shows as, by its format.
_MEDIA_LABELS = {"IMAGE": "[image]", "VIDEO": "[video]", "DOCUMENT": "[document]", "LOCATION": "[location]"}


@dataclass(frozen=True)
class Shown:
    """A rendered template: its text and the reply buttons under it."""

    text: str
    #: ``{"id": ..., "title": ...}`` per quick reply, in order.
    buttons: list[dict[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The message body (without ``to``) the chat page shows: text, or text with reply buttons."""
        if not self.buttons:
            return {"type": "text", "text": {"body": self.text}}
        action = {"buttons": [{"type": "reply", "reply": button} for button in self.buttons]}
        return {"type": "interactive", "interactive": {"type": "button", "body": {"text": self.text}, "action": action}}


def render(name: str, components: Sequence[Mapping[str, Any]], sent: Mapping[str, Any]) -> Shown:
    """The template ``name`` (its stored ``components``, Meta's create shape)
    filled with the parameters of ``sent`` (Meta's send shape of ``template``).

    Raises ``ProviderError`` (code 132000) naming the placeholder that has no value.
    """
    given = _given(sent)
    parts: list[str] = []
    lines: list[str] = []
    buttons: list[dict[str, str]] = []
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            parts.append(_header(name, component, given.get("header", {})))
        elif kind == "BODY" and component.get("text"):
            parts.append(_fill(name, "body", str(component["text"]), given.get("body", {})))
        elif kind == "FOOTER" and component.get("text"):
            parts.append(f"_{component['text']}_")
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons") or []):
                _button(name, index, button, given.get(f"button {index}", {}), lines, buttons)
    text = "\n\n".join(part for part in parts if part)
    if lines:
        text = f"{text}\n\n" + "\n".join(lines) if text else "\n".join(lines)
    return Shown(text, buttons)


def _given(sent: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The send's values per part (``header``, ``body``, ``button <index>``),
    each by placeholder: its ``parameter_name``, else its position (``"1"``...)."""
    given: dict[str, dict[str, str]] = {}
    for component in sent.get("components") or []:
        kind = str(component.get("type", "")).lower()
        part = f"button {component.get('index', 0)}" if kind == "button" else kind
        values = given.setdefault(part, {})
        for position, parameter in enumerate(component.get("parameters") or [], start=1):
            values[str(parameter.get("parameter_name") or position)] = _value(parameter)
    return given


def _value(parameter: Mapping[str, Any]) -> str:
    """What one send parameter reads as."""
    kind = str(parameter.get("type", "text"))
    if kind == "text":
        return str(parameter.get("text", ""))
    if kind == "payload":
        return str(parameter.get("payload", ""))
    detail = parameter.get(kind)
    if isinstance(detail, Mapping) and "fallback_value" in detail:  # currency, date_time
        return str(detail["fallback_value"])
    return f"[{kind}]"


def _fill(name: str, part: str, text: str, values: Mapping[str, str]) -> str:
    """``text`` with each placeholder replaced by its value; a missing one fails the send."""

    def value(match: Any) -> str:
        placeholder = match.group(1)
        if placeholder in values:
            return values[placeholder]
        # A header takes one parameter, whatever its name in the send.
        if part == "header" and len(values) == 1:
            return next(iter(values.values()))
        raise ProviderError(
            f"template {name!r}: the send gives no value for {{{{{placeholder}}}}} in the {part}",
            code=PARAMETERS_MISMATCH,
        )

    return PLACEHOLDER.sub(value, text)


def _header(name: str, component: Mapping[str, Any], values: Mapping[str, str]) -> str:
    header_format = str(component.get("format") or "TEXT").upper()
    if header_format != "TEXT":
        media = next(iter(values.values()), None)
        return media or _MEDIA_LABELS.get(header_format, f"[{header_format.lower()}]")
    text = component.get("text")
    return f"*{_fill(name, 'header', str(text), values)}*" if text else ""


def _button(
    name: str,
    index: int,
    button: Mapping[str, Any],
    values: Mapping[str, str],
    lines: list[str],
    buttons: list[dict[str, str]],
) -> None:
    """Add one template button: a quick reply to ``buttons``, any other kind to ``lines``."""
    kind = str(button.get("type", "")).upper()
    label = str(button.get("text", ""))
    if kind == "QUICK_REPLY":
        buttons.append({"id": values.get("1") or label, "title": label})
    elif kind == "URL":
        lines.append(f"{label}: {_fill(name, f'URL button {index}', str(button.get('url', '')), values)}")
    elif kind == "PHONE_NUMBER":
        lines.append(f"{label}: {button.get('phone_number', '')}")
    elif kind == "COPY_CODE":
        lines.append(f"{label or 'Copy code'}: {values.get('1') or button.get('example', '')}")
    else:
        lines.append(f"[{label or kind.lower()}]")
