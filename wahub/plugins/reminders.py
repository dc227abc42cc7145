"""Scheduled reminders declared in the configuration, and the job that fires
every due reminder (those of the REST API too).

Configuration::

    reminders:
      - name: weekly_digest
        cron: "0 9 * * mon"          # minute hour day-of-month month day-of-week
        timezone: Europe/Lisbon      # optional: without it, each contact's own zone
        template: weekly_digest
        language: en                 # optional: each contact's language
        parameters: {"1": "Monday"}  # optional
        to: {tags: [newsletter]}     # or a list of addresses
        provider: whatsapp           # optional: the first provider
        misfire_grace: 3600          # seconds late a firing may still go

The rows are synced when this replica takes the scheduler role and every
minute after, so that a zone newly among the audience's contacts gets its row;
the firing job runs every second, on the scheduler's replica only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import voluptuous as vol

from wahub import hookimpl
from wahub.core.config.validators import (
    ExplainedInvalid,
    Reference,
    Section,
    language_code,
    seconds_between,
    timezone_name,
)
from wahub.core.http.notification_schemas import PARAMETERS
from wahub.core.hub import Hub
from wahub.core.outbound.cron import CronError, parse
from wahub.core.outbound.reminders import fire_due, sync_config_reminders
from wahub.hookspecs import JobSpec

#: The default of ``misfire_grace``: an hour late, a reminder still goes.
DEFAULT_MISFIRE_GRACE = 3600
MAX_MISFIRE_GRACE = 7 * 86400
MAX_ADDRESS, MAX_TAG = 128, 64


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise vol.Invalid("expected a cron expression such as '0 9 * * mon'")
    try:
        parse(value)
    except CronError as exc:
        raise ExplainedInvalid(str(exc)) from None
    return value


def _or_none(validator: Callable[[Any], str]) -> Callable[[Any], str | None]:
    """``validator``, letting the key be written without a value."""

    def validate(value: Any) -> str | None:
        return None if value is None else validator(value)

    return validate


# The shape of a notification's parameters (``PARAMETERS`` of the REST API), for YAML.
_PARAMETER_NAME = re.compile(r"[0-9]+|[a-z][a-z0-9_]*")
_BUTTON_INDEX = re.compile(r"[0-9]")
_HEADER_MEDIA = ("image", "video", "document", "location")
MAX_PARAMETER_TEXT = 1024


def _parameter_text(value: Any, path: list[Any], *, numbers: bool = False) -> None:
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PARAMETER_TEXT:
        kind = "a number or a text" if numbers else "a text"
        raise vol.Invalid(f"expected {kind} of 1 to {MAX_PARAMETER_TEXT} characters", path=path)


def _header(value: Any) -> None:
    if isinstance(value, str):
        _parameter_text(value, ["header"])
    elif not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _HEADER_MEDIA):
        media = ", ".join(_HEADER_MEDIA)
        raise vol.Invalid(f"expected a text or one media object ({media}: {{link: ...}})", path=["header"])
    elif not isinstance(next(iter(value.values())), dict):
        raise vol.Invalid("expected a mapping such as {link: https://...}", path=["header", next(iter(value))])


def _buttons(value: Any) -> None:
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of button index (0 to 9) to its text or payload", path=["buttons"])
    for index, text in value.items():
        if not isinstance(index, str) or not _BUTTON_INDEX.fullmatch(index):
            raise vol.Invalid(f"{str(index)[:40]!r} is not a button index: use 0 to 9", path=["buttons", index])
        _parameter_text(text, ["buttons", index])


def _parameters(value: Any) -> dict[str, Any] | None:
    """A template's parameters in the shape a notification takes (``PARAMETERS``),
    every wrong one reported."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise vol.Invalid(f"expected a mapping: {PARAMETERS['description']}")
    problems = []
    for name, given in value.items():
        try:
            _parameter(name, given)
        except vol.Invalid as exc:
            problems.append(exc)
    if problems:
        raise vol.MultipleInvalid(problems)
    return value


def _parameter(name: Any, given: Any) -> None:
    if name == "header":
        _header(given)
    elif name == "buttons":
        _buttons(given)
    elif not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
        message = f"{str(name)[:40]!r} is not a parameter name: use 1, 2... or a lowercase name such as order_id"
        raise vol.Invalid(message, path=[name])
    else:
        _parameter_text(given, [name], numbers=True)


_TAGS = vol.Schema({vol.Required("tags"): vol.All([vol.All(str, vol.Length(min=1, max=MAX_TAG))], vol.Length(min=1))})
_ADDRESSES = vol.All([vol.All(str, vol.Length(min=1, max=MAX_ADDRESS))], vol.Length(min=1))


def _audience(value: Any) -> Any:
    if isinstance(value, dict):
        return _TAGS(value)
    if isinstance(value, list):
        return _ADDRESSES(value)
    raise vol.Invalid("expected {tags: [...]} (contacts having every tag) or a list of addresses")


_REMINDER = vol.Schema(
    {
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[A-Za-z0-9_.-]{1,128}$", msg="expected 1 to 128 letters, digits, '_', '.' or '-'")
        ),
        vol.Required("cron"): _cron,
        vol.Optional("timezone", default=None): _or_none(timezone_name),
        vol.Required("template"): vol.All(str, vol.Length(min=1, max=512)),
        vol.Optional("language", default=None): _or_none(language_code),
        vol.Optional("parameters", default=None): _parameters,
        vol.Required("to"): _audience,
        vol.Optional("provider", default=None): vol.Maybe(str),
        vol.Optional("misfire_grace", default=DEFAULT_MISFIRE_GRACE): seconds_between(0, MAX_MISFIRE_GRACE),
    }
)


def _reminders(value: Any) -> list[Any]:
    """Every entry checked, and every entry's problems reported at once."""
    if isinstance(value, dict) and not value:
        return []  # the section is absent
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of reminders, each with name, cron, template and to")
    checked, problems = [], []
    for index, entry in enumerate(value):
        try:
            checked.append(_REMINDER(entry))
        except vol.MultipleInvalid as exc:
            problems += exc.errors
            for problem in exc.errors:
                problem.prepend([index])
        except vol.Invalid as exc:
            exc.prepend([index])
            problems.append(exc)
    if problems:
        raise vol.MultipleInvalid(problems)
    return checked


def _references(config: Mapping[str, Any]) -> Iterator[Reference]:
    providers = [entry["name"] for entry in config["providers"]]
    first_use: dict[str, int] = {}
    for index, reminder in enumerate(config["reminders"]):
        provider = reminder["provider"]
        if provider is not None and provider not in providers:
            yield [index, "provider"], f"no provider is named {provider!r} (providers: {', '.join(providers)})"
        earlier = first_use.setdefault(reminder["name"], index)
        if earlier != index:
            yield [index, "name"], f"reminder name {reminder['name']!r} is already used by reminders[{earlier}]"


#: The ``reminders:`` section: its entries, and the providers they name.
REMINDERS_SCHEMA = Section(_reminders, _references)


async def sync_reminders(hub: Hub) -> None:
    await sync_config_reminders(hub, hub.config["reminders"])


async def fire_reminders(hub: Hub) -> None:
    await fire_due(hub)


@hookimpl
def register_config_sections() -> dict[str, Any]:
    return {"reminders": REMINDERS_SCHEMA}


@hookimpl
def scheduled_jobs(hub: Hub) -> Iterable[JobSpec]:
    return [
        JobSpec(
            id="wahub.reminders.sync",
            func=sync_reminders,
            trigger="interval",
            trigger_args={"minutes": 1},
            at_start=True,
        ),
        JobSpec(
            id="wahub.reminders.fire",
            func=fire_reminders,
            trigger="interval",
            trigger_args={"seconds": 1},
            at_start=True,
        ),
    ]
