"""A template message's parameters checked against the template as stored.

Meta refuses a send whose parameters do not match the approved template
(132000 count mismatch, 132012 format mismatch), but only after the message
was queued and paced, and with a code rather than the parameter at fault.
When a provider's templates are synced with their components (Meta's listing
shape: ``HEADER`` with a ``format``, ``BODY`` with its ``text``, ``BUTTONS``),
``check_parameters`` finds the same mistakes before anything is queued:

- the body, and a text header, get one parameter per placeholder
  (``{{1}}``, ``{{2}}``...), no more and no fewer;
- a named template (``{{order_id}}``) gets every name as a
  ``parameter_name``, each once, and no name it does not have;
- a media header (image, video, document, location) gets one parameter of
  that type;
- each URL button whose URL has a variable gets its ``button`` component
  (``sub_type: url``) at the button's index, and no button component names
  an index the template does not have.

Blank text parameters are refused earlier, with the message's shape
(``wahub.core.canonical.validate``). Each refusal is ``InvalidMessage``
naming the component or parameter at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wahub.core.canonical.placeholders import is_positional, placeholders
from wahub.core.errors import InvalidMessage

Json = dict[str, Any]

#: Header formats that take a media (or location) parameter of the same name.
MEDIA_HEADERS = frozenset({"IMAGE", "VIDEO", "DOCUMENT", "LOCATION"})
_COMPONENTS = "template.components"


@dataclass(frozen=True)
class Button:
    """One of the template's buttons: its type (``URL``, ``QUICK_REPLY``...) and
    whether its URL has a variable the send must fill."""

    type: str
    variable: bool


@dataclass(frozen=True)
class Expected:
    """What a send of one template must give, read from its stored components."""

    #: ``TEXT``, ``IMAGE``, ...; None when the template has no header.
    header_format: str | None
    header: tuple[str, ...]
    body: tuple[str, ...]
    buttons: tuple[Button, ...]


def _text(component: Mapping[str, Any], key: str) -> str:
    value = component.get(key)
    return value if isinstance(value, str) else ""


def _distinct(text: str) -> tuple[str, ...]:
    """The placeholders of ``text``, each once, in order (positional ones by number)."""
    found = list(dict.fromkeys(placeholders(text)))
    if found and all(is_positional(name) for name in found):
        found.sort(key=int)
    return tuple(found)


def expected_parameters(components: Sequence[Any]) -> Expected:
    """What the stored ``components`` (Meta's listing shape) ask of a send.
    Entries that are not objects are skipped: the provider's data, not the client's."""
    header_format: str | None = None
    header: tuple[str, ...] = ()
    body: tuple[str, ...] = ()
    buttons: list[Button] = []
    for component in components:
        if not isinstance(component, dict):
            continue
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header_format = str(component.get("format") or "TEXT").upper()
            header = _distinct(_text(component, "text")) if header_format == "TEXT" else ()
        elif kind == "BODY":
            body = _distinct(_text(component, "text"))
        elif kind == "BUTTONS":
            for button in component.get("buttons") or []:
                entry = button if isinstance(button, dict) else {}
                button_type = str(entry.get("type", "")).upper()
                buttons.append(Button(button_type, button_type == "URL" and bool(placeholders(_text(entry, "url")))))
    return Expected(header_format, header, body, tuple(buttons))


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f"{{{{{name}}}}}" for name in names)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_positional(part: str, expected: tuple[str, ...], given: list[Json], where: str) -> None:
    for index, parameter in enumerate(given):
        if "parameter_name" in parameter:
            raise InvalidMessage(
                f"{where}.parameters[{index}].parameter_name",
                f"{part} parameter {index + 1} is named {parameter['parameter_name']!r}, but the template's "
                f"{part} parameters are positional ({_listed(expected) or 'none'})",
            )
    if len(given) < len(expected):
        raise InvalidMessage(
            where, f"{part} parameter {{{{{expected[len(given)]}}}}} is missing (the {part} has {_listed(expected)})"
        )
    if len(given) > len(expected):
        has = f"{len(expected)} ({_listed(expected)})" if expected else "none"
        raise InvalidMessage(
            f"{where}.parameters[{len(expected)}]",
            f"{part} has {_counted(len(given), 'parameter')}; the template's {part} has {has}",
        )


def _check_named(part: str, expected: tuple[str, ...], given: list[Json], where: str) -> None:
    names = ", ".join(expected)
    seen: set[str] = set()
    for index, parameter in enumerate(given):
        path = f"{where}.parameters[{index}]"
        name = parameter.get("parameter_name")
        if not isinstance(name, str) or not name:
            raise InvalidMessage(
                path,
                f"{part} parameter {index + 1} needs a parameter_name: the template's parameters are named ({names})",
            )
        if name not in expected:
            raise InvalidMessage(
                f"{path}.parameter_name", f"unknown named parameter {name!r} (the template has {names})"
            )
        if name in seen:
            raise InvalidMessage(f"{path}.parameter_name", f"named parameter {name!r} is given twice")
        seen.add(name)
    missing = next((name for name in expected if name not in seen), None)
    if missing is not None:
        raise InvalidMessage(where, f"{part} parameter {{{{{missing}}}}} is missing (the {part} has {names})")


def _check_placeholders(part: str, expected: tuple[str, ...], component: tuple[str, Json] | None) -> None:
    where, given = component if component is not None else (_COMPONENTS, {})
    parameters: list[Json] = given.get("parameters") or []
    if expected and not all(is_positional(name) for name in expected):
        _check_named(part, expected, parameters, where)
    else:
        _check_positional(part, expected, parameters, where)


def _check_media_header(header_format: str, component: tuple[str, Json] | None) -> None:
    wanted = header_format.lower()
    article = "an" if wanted[0] in "aeiou" else "a"
    where, given = component if component is not None else (_COMPONENTS, {})
    parameters: list[Json] = given.get("parameters") or []
    if not parameters:
        raise InvalidMessage(where, f"header needs {article} {wanted} parameter, got none")
    if len(parameters) > 1:
        raise InvalidMessage(f"{where}.parameters[1]", f"header takes one {wanted} parameter, got {len(parameters)}")
    got = parameters[0]["type"]
    if got != wanted:
        raise InvalidMessage(f"{where}.parameters[0].type", f"header needs {article} {wanted} parameter, got {got}")


def _button_index(component: Json, where: str) -> int:
    index = component.get("index")
    if isinstance(index, str) and index.strip().isdigit():
        return int(index)
    if isinstance(index, (int, float)) and not isinstance(index, bool) and index >= 0 and float(index).is_integer():
        return int(index)
    raise InvalidMessage(f"{where}.index", f"must be the button's position (0, 1, ...), not {index!r}")


def _check_buttons(buttons: tuple[Button, ...], sent: list[tuple[str, Json]]) -> None:
    by_index: dict[int, tuple[str, Json]] = {}
    for where, component in sent:
        index = _button_index(component, where)
        if index >= len(buttons):
            has = _counted(len(buttons), "button") if buttons else "no buttons"
            raise InvalidMessage(f"{where}.index", f"the template has no button {index} (it has {has})")
        if index in by_index:
            raise InvalidMessage(f"{where}.index", f"button {index} is given twice")
        by_index[index] = (where, component)
    for index, button in enumerate(buttons):
        if not button.variable:
            continue
        if index not in by_index:
            raise InvalidMessage(
                _COMPONENTS,
                f"button {index} is a URL button with a variable: it needs a button component "
                f"with sub_type url and index {index}",
            )
        where, component = by_index[index]
        if component.get("sub_type") != "url":
            raise InvalidMessage(
                f"{where}.sub_type",
                f"button {index} is a URL button with a variable: sub_type must be url, "
                f"not {component.get('sub_type')!r}",
            )
        parameters = component.get("parameters") or []
        if len(parameters) != 1 or parameters[0]["type"] != "text":
            raise InvalidMessage(f"{where}.parameters", f"button {index} needs one text parameter: the end of its URL")


def check_parameters(template: Mapping[str, Any], components: Sequence[Any]) -> None:
    """Refuse (``InvalidMessage``) the canonical ``template`` body (its shape
    already checked by ``parse_message``) whose parameters do not fit the
    stored ``components``; see the module docstring."""
    expected = expected_parameters(components)
    single: dict[str, tuple[str, Json]] = {}
    buttons: list[tuple[str, Json]] = []
    for index, component in enumerate(template.get("components") or []):
        where = f"{_COMPONENTS}[{index}]"
        kind = component["type"]
        if kind == "button":
            buttons.append((where, component))
        elif kind in single:
            raise InvalidMessage(where, f"a second {kind} component; a template message has one {kind}")
        else:
            single[kind] = (where, component)
    header = single.get("header")
    if expected.header_format in MEDIA_HEADERS:
        _check_media_header(expected.header_format, header)
    else:
        _check_placeholders("header", expected.header, header)
    _check_placeholders("body", expected.body, single.get("body"))
    _check_buttons(expected.buttons, buttons)
