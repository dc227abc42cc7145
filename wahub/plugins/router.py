"""The built-in rules router: keyword and regex rules answer with text.

It runs last (``trylast``), so any plugin's ``route_message`` can take a
message first. Configuration::

    router:
      rules:
        - match: {keyword: [hi, hello]}     # whole words, any case
          reply: "Hello! How can I help?"
        - match: {regex: 'order\\s+(\\d+)'}
          reply: "Order {1} is on its way."   # {0}: whole match, {1}...: groups, {name}: contact
        - match: {keyword: menu}
          reply: {text: "What would you like?", buttons: [Opening hours, Talk to us]}
      default_reply: "Sorry, I did not understand."
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

import voluptuous as vol

from wahub import hookimpl
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.hookspecs import Route, Turn

MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_TEXT = 4096
_TITLE_MSG = f"button titles have 1 to {MAX_BUTTON_TITLE} characters"


def _keywords(value: Any) -> re.Pattern[str]:
    words = [value] if isinstance(value, str) else value
    words = vol.Schema([vol.All(str, vol.Length(min=1))], required=True)(words)
    if not words:
        raise vol.Invalid("give at least one keyword")
    alternatives = "|".join(re.escape(word.strip()) for word in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _regex(value: Any) -> re.Pattern[str]:
    try:
        return re.compile(str(value), re.IGNORECASE)
    except re.error as exc:
        raise vol.Invalid(f"invalid regular expression: {exc}") from exc


def _require_one(match: dict[str, Any]) -> dict[str, Any]:
    if not match:
        raise vol.Invalid("give 'keyword' or 'regex' (or both)")
    return match


MATCH_SCHEMA = vol.All({vol.Optional("keyword"): _keywords, vol.Optional("regex"): _regex}, _require_one)


_TEXT_REPLY = vol.All(str, vol.Length(min=1, max=MAX_TEXT))
_RICH_REPLY = vol.Schema(
    {
        vol.Required("text"): vol.All(str, vol.Length(min=1, max=1024)),
        vol.Optional("buttons", default=[]): vol.All(
            [vol.All(str, vol.Length(min=1, max=MAX_BUTTON_TITLE, msg=_TITLE_MSG))],
            vol.Length(max=MAX_BUTTONS, msg=f"WhatsApp allows at most {MAX_BUTTONS} reply buttons"),
        ),
    }
)


def _reply(value: Any) -> Any:
    """A reply is a text, or ``{text, buttons}``; errors name the part that is wrong."""
    if isinstance(value, str):
        return _TEXT_REPLY(value)
    if isinstance(value, dict):
        return _RICH_REPLY(value)
    raise vol.Invalid("a reply is a text or {text: ..., buttons: [...]}")


def _check_text(text: str, groups: int) -> str:
    """Refuse placeholders a match can never fill, at start-up rather than at reply time."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ExplainedInvalid(f"{exc} (write {{{{ and }}}} for literal braces)") from exc
    for name in fields:
        if name != "name" and not (name.isdigit() and int(name) <= groups):
            available = "{0} (whole match), " + (f"{{1}}..{{{groups}}} (regex groups), " if groups else "")
            raise ExplainedInvalid(f"placeholder {{{name}}} is not available here; use {available}or {{name}}")
    return text


def _regex_groups(rule: Mapping[str, Any]) -> int:
    return int(rule["match"]["regex"].groups) if "regex" in rule["match"] else 0


def _check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    reply, groups = rule["reply"], _regex_groups(rule)
    try:
        _check_text(reply if isinstance(reply, str) else reply["text"], groups)
    except vol.Invalid as exc:
        raise ExplainedInvalid(exc.msg, path=["reply"] if isinstance(reply, str) else ["reply", "text"]) from exc
    return rule


def _default_reply(value: Any) -> Any:
    if value is None:
        return None
    return _check_text(vol.All(str, vol.Length(min=1, max=MAX_TEXT))(value), groups=0)


ROUTER_SCHEMA = vol.Schema(
    {
        vol.Optional("rules", default=[]): [
            vol.All({vol.Required("match"): MATCH_SCHEMA, vol.Required("reply"): _reply}, _check_rule)
        ],
        vol.Optional("default_reply"): _default_reply,
    }
)


def _find(rule: Mapping[str, Any], text: str) -> re.Match[str] | None:
    for kind in ("regex", "keyword"):
        if kind in rule["match"]:
            found: re.Match[str] | None = rule["match"][kind].search(text)
            if found:
                return found
    return None


def _render(reply: Any, found: re.Match[str] | None, message: InboundMessage, groups: int) -> OutgoingMessage:
    args = [found.group(0), *(group or "" for group in found.groups())] if found else [""]
    # A rule with a keyword and a regex may match by keyword: its groups are then empty.
    args += [""] * (groups + 1 - len(args))
    name = message.sender_name or ""
    if isinstance(reply, str):
        return OutgoingMessage.text(message.sender, reply.format(*args, name=name))
    text = reply["text"].format(*args, name=name)
    if reply["buttons"]:
        return OutgoingMessage.reply_buttons(message.sender, text, list(reply["buttons"]))
    return OutgoingMessage.text(message.sender, text)


def answer(config: Mapping[str, Any], message: InboundMessage) -> OutgoingMessage | None:
    """The reply of the first matching rule, else the default reply, else None."""
    text = message.text()
    for rule in config["rules"]:
        found = _find(rule, text)
        if found:
            return _render(rule["reply"], found, message, _regex_groups(rule))
    default = config.get("default_reply")
    return _render(default, None, message, 0) if default else None


async def _respond(hub: Hub, turn: Turn) -> list[OutgoingMessage]:
    reply = answer(hub.config["router"], turn.message)
    return [reply] if reply else []


@hookimpl
def register_config_sections() -> dict[str, Any]:
    return {"router": ROUTER_SCHEMA}


@hookimpl(trylast=True)
def route_message(hub: Hub, message: InboundMessage) -> Route:
    return Route(handler="rules", respond=_respond)
