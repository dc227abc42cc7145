"""The built-in router: keyword and regex rules, a hand-off to a person, an AI
fallback, business hours and a greeting, each text in the contact's language.

It runs last (``trylast``), so any plugin's ``route_message`` can take a
message first. Configuration::

    router:
      rules:
        - match: {keyword: [hi, hello, привет]}     # whole words, any case
          reply: {en: "Hello! How can I help?", ru: "Здравствуйте! Чем помочь?"}
        - match: {keyword: [operator, human, оператор]}
          handoff: {en: "Connecting you with a person.", ru: "Передаю оператору."}
        - match: {regex: 'order\\s+(\\d+)'}
          reply: "Order {1} is on its way."   # {0}: whole match, {1}...: groups, {name}: contact
        - match: {keyword: menu}
          reply: {text: "What would you like?", buttons: [Opening hours, Talk to us]}
      fallback: assistant          # an ai: entry's name answers what no rule matched
      default_reply: "Sorry, I did not understand."
      greeting: "Welcome!"         # sent before the answer to a contact's first message
      business_hours:              # outside them: the closed reply, then the queue for a person
        timezone: Europe/Lisbon
        weekly: {mon-fri: "09:00-18:00", sat: "10:00-14:00"}
        closed_reply: "We are closed now; a person will answer at opening time."

A reply is a text, ``{text, buttons}``, or a mapping of language codes to
either; the contact's language picks one (its base language, then
``wahub.language``, then the first written).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import voluptuous as vol

from wahub import hookimpl
from wahub.core.config.validators import ExplainedInvalid, Reference, Section, canonical_language
from wahub.core.conversations.assistant import ask_assistant
from wahub.core.conversations.language import fallback_chain
from wahub.core.hub import Hub
from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.hookspecs import Answer, Route, Turn
from wahub.plugins.business_hours import BUSINESS_HOURS_SCHEMA, is_open

MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_TEXT = 4096
_TITLE_MSG = f"button titles have 1 to {MAX_BUTTON_TITLE} characters"
#: The key of a reply written without languages: it serves every language.
ANY_LANGUAGE = ""


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


_TEXT = vol.All(str, vol.Length(min=1, max=MAX_TEXT))
_RICH = vol.Schema(
    {
        vol.Required("text"): vol.All(str, vol.Length(min=1, max=1024)),
        vol.Optional("buttons", default=[]): vol.All(
            [vol.All(str, vol.Length(min=1, max=MAX_BUTTON_TITLE, msg=_TITLE_MSG))],
            vol.Length(max=MAX_BUTTONS, msg=f"WhatsApp allows at most {MAX_BUTTONS} reply buttons"),
        ),
    }
)


def _one_reply(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": _TEXT(value), "buttons": []}
    if isinstance(value, dict):
        return dict(_RICH(value))
    raise vol.Invalid("a reply is a text, {text: ..., buttons: [...]}, or one of those per language (en: ...)")


def _reply(value: Any) -> dict[str, dict[str, Any]]:
    """A reply as ``{language: {text, buttons}}`` (``ANY_LANGUAGE`` when written
    without languages); errors name the part that is wrong."""
    if not isinstance(value, dict) or "text" in value:
        return {ANY_LANGUAGE: _one_reply(value)}
    if not value:
        raise vol.Invalid("give a text, or at least one language (en: ...)")
    replies: dict[str, dict[str, Any]] = {}
    for key, entry in value.items():
        code = canonical_language(key) if isinstance(key, str) else None
        if code is None:
            raise ExplainedInvalid(
                f"{key!r} is not a language code (such as en or pt-BR); a reply with buttons is "
                "{text: ..., buttons: [...]}",
                path=[key],
            )
        try:
            replies[code] = _one_reply(entry)
        except vol.Invalid as exc:
            raise vol.Invalid(exc.msg, path=[key, *exc.path]) from exc
    return replies


def _text_only(value: Any) -> dict[str, dict[str, Any]]:
    replies = _reply(value)
    for code, reply in replies.items():
        if reply["buttons"]:
            raise ExplainedInvalid("this text cannot have buttons", path=[code] if code else [])
    return replies


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


def _checked_texts(replies: dict[str, dict[str, Any]], groups: int, key: str) -> None:
    for code, reply in replies.items():
        try:
            _check_text(reply["text"], groups)
        except vol.Invalid as exc:
            language = [code] if code else []
            raise ExplainedInvalid(exc.msg, path=[key, *language, *(["text"] if reply["buttons"] else [])]) from exc


def _regex_groups(rule: Mapping[str, Any]) -> int:
    return int(rule["match"]["regex"].groups) if "regex" in rule["match"] else 0


def _check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    answers = [key for key in ("reply", "handoff") if key in rule]
    if len(answers) != 1:
        raise ExplainedInvalid("give a rule either 'reply' (the bot answers) or 'handoff' (a person takes over)")
    _checked_texts(rule[answers[0]], _regex_groups(rule), answers[0])
    return rule


def _moved(where: str, why: str) -> Any:
    def refuse(_value: Any) -> None:
        raise ExplainedInvalid(f"write this as {where}: {why}")

    return refuse


def _plain(replies: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    _checked_texts(replies, 0, "")
    return replies


def _references(config: Mapping[str, Any]) -> Iterator[Reference]:
    fallback = config["router"].get("fallback")
    names = sorted(entry["name"] for entry in config["ai"])
    if fallback is not None and fallback not in names:
        yield ["fallback"], f"no ai: entry is named {fallback!r} (ai entries: {', '.join(names) or 'none'})"


_ROUTER_SCHEMA = vol.Schema(
    {
        vol.Optional("rules", default=[]): [
            vol.All(
                {
                    vol.Required("match"): MATCH_SCHEMA,
                    vol.Optional("reply"): _reply,
                    vol.Optional("handoff"): _text_only,
                },
                _check_rule,
            )
        ],
        vol.Optional("fallback"): vol.All(str, vol.Length(min=1)),
        vol.Optional("default_reply"): vol.All(_text_only, _plain),
        vol.Optional("greeting"): vol.All(_reply, _plain),
        vol.Optional("debounce_seconds"): _moved("conversations.debounce_seconds", "it applies to every router"),
        vol.Optional("business_hours"): vol.All(
            BUSINESS_HOURS_SCHEMA, lambda hours: {**hours, "closed_reply": _plain(_reply(hours["closed_reply"]))}
        ),
    }
)
#: The router's section: its keys, and the AI backend its ``fallback`` names.
ROUTER_SCHEMA = Section(_ROUTER_SCHEMA, _references)


def find_rule(config: Mapping[str, Any], text: str) -> tuple[Mapping[str, Any], re.Match[str]] | None:
    """The first rule whose keyword or regex occurs in ``text``, with its match."""
    for rule in config["rules"]:
        for kind in ("regex", "keyword"):
            found: re.Match[str] | None = rule["match"][kind].search(text) if kind in rule["match"] else None
            if found:
                return rule, found
    return None


def render(
    reply: Mapping[str, Mapping[str, Any]],
    message: InboundMessage,
    *,
    language: str | None,
    default: str,
    found: re.Match[str] | None = None,
    groups: int = 0,
) -> OutgoingMessage:
    """``reply`` in the contact's language (the fallback chain, else its first
    language), its placeholders filled from the match and the contact's name."""
    chosen = next((reply[code] for code in fallback_chain(language, default) if code in reply), None)
    chosen = chosen or reply.get(ANY_LANGUAGE) or next(iter(reply.values()))
    args = [found.group(0), *(group or "" for group in found.groups())] if found else [""]
    # A rule with a keyword and a regex may match by keyword: its groups are then empty.
    args += [""] * (groups + 1 - len(args))
    text = chosen["text"].format(*args, name=message.sender_name or "")
    if chosen["buttons"]:
        return OutgoingMessage.reply_buttons(message.sender, text, list(chosen["buttons"]))
    return OutgoingMessage.text(message.sender, text)


def pick_rule(
    config: Mapping[str, Any], messages: Sequence[InboundMessage]
) -> tuple[Mapping[str, Any], re.Match[str]] | None:
    """The rule that answers a burst of messages, with its match: a hand-off
    asked for anywhere in it ("a human please", then "hi" is still a hand-off),
    else the rule of the latest message that one matches ("hi", then "menu"
    is a menu)."""
    found = [hit for message in reversed(messages) if (hit := find_rule(config, message.text()))]
    return next((hit for hit in found if "handoff" in hit[0]), found[0] if found else None)


async def _respond(hub: Hub, turn: Turn) -> Answer:
    config = hub.config["router"]
    message = turn.message

    def say(reply: Mapping[str, Mapping[str, Any]], **match: Any) -> OutgoingMessage:
        return render(reply, message, language=turn.language, default=hub.config["wahub"]["language"], **match)

    greeting = [say(config["greeting"])] if turn.first_contact and "greeting" in config else []
    hours = config.get("business_hours")
    if hours is not None and not is_open(hours, hub.clock.time()):
        closed = [say(hours["closed_reply"])]
        return Answer(greeting + closed, handoff="outside business hours", actor="business_hours")
    matched = pick_rule(config, turn.messages)
    if matched is not None:
        rule, found = matched
        groups = _regex_groups(rule)
        if "handoff" in rule:
            reason = f"asked for a person ({found.group(0)!r})"
            return Answer([*greeting, say(rule["handoff"], found=found, groups=groups)], handoff=reason, actor="rule")
        return Answer([*greeting, say(rule["reply"], found=found, groups=groups)], actor="rule")
    if "fallback" in config:
        answer = await ask_assistant(hub, turn, config["fallback"])
        if answer.replies or answer.handoff:
            return Answer([*greeting, *answer.replies], handoff=answer.handoff, actor=answer.actor)
    default = [say(config["default_reply"])] if "default_reply" in config else []
    return Answer([*greeting, *default], actor="rule")


def languages(config: Mapping[str, Any]) -> set[str]:
    """The languages the router's texts are written in."""
    replies = [rule.get("reply") or rule.get("handoff") for rule in config["rules"]]
    replies += [config.get(key) for key in ("default_reply", "greeting")]
    replies.append((config.get("business_hours") or {}).get("closed_reply"))
    return {code for reply in replies if reply for code in reply if code != ANY_LANGUAGE}


@hookimpl
def register_config_sections() -> dict[str, Any]:
    return {"router": ROUTER_SCHEMA}


@hookimpl
def lifespan(hub: Hub) -> None:
    # The languages of its texts, for detection (wahub.core.runtime.app.languages_ctx).
    hub.languages.update(languages(hub.config["router"]))


@hookimpl(trylast=True)
def route_message(hub: Hub, message: InboundMessage) -> Route:
    return Route(handler="rules", respond=_respond)
