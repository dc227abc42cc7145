"""Validation of wahub's configuration, and the schema of its core sections.

Validation runs in two passes. Pass 1 checks the top level: the core sections
(``wahub``, ``providers``, ``ai``, ``crm``), the sections plugins contribute
(``router``, ...) and, for each entry of the platform lists (``providers:``,
``ai:``, ``crm:``), that ``platform`` names an installed platform of that list. Pass 2
checks each entry against its platform's ``CONFIG_SCHEMA``.
Every problem of both passes is reported at once, as ``file:line: path:
message``, pointing at the YAML line of the offending key or value; values
read through ``!secret``/``!env_var`` are printed as ``***``.

The schemas of the keys other layers read (``wahub.media``, the limits of
``wahub.http``, ``policy``) are in ``wahub.core.config.sections``, the shared
validators in ``wahub.core.config.validators``, and the locating and writing
of problems in ``wahub.core.config.problems``.

Defaults live in the schemas only, so ``default_config`` (validating an empty
configuration) is the configuration wahub runs on when no file is given.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import voluptuous as vol

from wahub.core.config.loader import load_yaml
from wahub.core.config.nodes import NodeDict, mark_of, to_plain
from wahub.core.config.problems import DEFAULTS_SOURCE, Checker, show, sorted_problems, unknown_key
from wahub.core.config.sections import CONVERSATIONS_SCHEMA, HTTP_LIMIT_KEYS, MEDIA_SCHEMA, POLICY_SCHEMA
from wahub.core.config.templates import load_templates
from wahub.core.config.validators import (
    ExplainedInvalid,
    Section,
    int_between,
    language_code,
    language_codes,
    timezone_name,
)
from wahub.core.errors import ConfigError, ConfigProblem

__all__ = [
    "CORE_SCHEMA",
    "HTTP_SCHEMA",
    "WAHUB_SCHEMA",
    "ConfigError",
    "ConfigProblem",
    "database_url",
    "default_config",
    "load_config",
    "validate_config",
]

#: No platforms: the default of ``ai_platforms`` for callers that configure no AI.
_NO_PLATFORMS: Mapping[str, type] = MappingProxyType({})

DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_API_TOKEN_LENGTH = 16
#: The key every provider and AI entry needs, which names its platform.
PLATFORM_KEY = "platform"
#: Top-level names the core keeps for itself.
CORE_SECTIONS = ("wahub", "providers", "ai", "crm", "policy", "conversations")


def database_url(value: Any) -> str:
    """Accept the database URLs wahub's storage supports."""
    if not isinstance(value, str):
        raise vol.Invalid("expected a database URL")
    if not value.startswith(DATABASE_SCHEMES):
        raise vol.Invalid(
            "expected a database URL starting with sqlite:/// (a file, e.g. sqlite:///data/wahub.db) "
            "or postgresql:// (e.g. postgresql://wahub@localhost/wahub)"
        )
    if value.startswith("sqlite:///") and value.removeprefix("sqlite:///") in ("", ":memory:"):
        # The inbox writer has its own connection: an in-memory database is not shared with it.
        raise ExplainedInvalid("SQLite needs a file (e.g. sqlite:///data/wahub.db), not an in-memory database")
    return value


def _api_token(value: Any) -> str:
    # Tokens are credentials even when written in clear, so they are never echoed.
    if not isinstance(value, str):
        raise ExplainedInvalid("expected an API token (a string)")
    if len(value) < MIN_API_TOKEN_LENGTH:
        raise ExplainedInvalid(
            f"API token is too short: tokens guard the REST API, so use at least "
            f"{MIN_API_TOKEN_LENGTH} random characters (e.g. the output of `openssl rand -hex 32`)"
        )
    return value


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise vol.Invalid(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _provider_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of provider entries")
    if not value:
        raise ExplainedInvalid("at least one provider is required (for example `- platform: sandbox`)")
    return value


def _default_providers() -> list[dict[str, str]]:
    return [{"platform": "sandbox", "name": "sandbox"}]


def _ai_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of AI backend entries (for example `- platform: faq`)")
    return value


def _crm_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of CRM entries (for example `- platform: webhook`)")
    return value


@dataclass(frozen=True)
class _PlatformList:
    """A top-level list whose entries each pick their schema by ``platform:``."""

    section: str
    #: What an entry is, in messages: "provider", "AI backend".
    noun: str
    #: Why names must differ, in the message about a name used twice.
    unique_because: str
    default: Callable[[], list[Any]]


_PROVIDERS = _PlatformList(
    "providers",
    "provider",
    "each name is a webhook path (/webhooks/<name>), so names must be unique",
    _default_providers,
)
_AI = _PlatformList("ai", "AI backend", "the router's fallback names a backend by it, so names must be unique", list)
_CRM = _PlatformList(
    "crm",
    "CRM backend",
    "its deliveries are recorded under it (and its webhooks served at /crm/<name>/), so names must be unique",
    list,
)


HTTP_SCHEMA = vol.Schema(
    {
        vol.Optional("host", default="127.0.0.1"): str,
        vol.Optional("port", default=8080): int_between(1, 65535),
        **HTTP_LIMIT_KEYS,
    }
)

WAHUB_SCHEMA = vol.Schema(
    {
        vol.Optional("http", default=dict): HTTP_SCHEMA,
        vol.Optional("database", default="sqlite:///data/wahub.db"): database_url,
        vol.Optional("api_tokens", default=list): [_api_token],
        vol.Optional("workers", default=4): int_between(1, 64),
        vol.Optional("inbox_stuck_after", default=120): int_between(1, 86400),
        vol.Optional("log_level", default="info"): _log_level,
        vol.Optional("media", default=dict): MEDIA_SCHEMA,
        # The language of contacts whose language is neither set nor detected.
        vol.Optional("language", default="en"): language_code,
        # The languages detection chooses between; None: those of the configured texts.
        vol.Optional("languages", default=None): language_codes,
        # Message templates as code (one YAML file each), relative to the configuration file.
        vol.Optional("templates_dir", default="templates"): vol.All(str, vol.Length(min=1)),
        # The time zone of contacts whose own zone is unknown (reminders fire in it).
        vol.Optional("timezone", default="UTC"): timezone_name,
    }
)

#: The core top-level sections. Provider and AI entries are only checked for
#: shape here; each entry is validated on its own (pass 1 ``platform``, pass 2
#: its platform's ``CONFIG_SCHEMA``).
CORE_SCHEMA = vol.Schema(
    {
        vol.Optional("wahub", default=dict): WAHUB_SCHEMA,
        vol.Optional("providers", default=_default_providers): _provider_list,
        vol.Optional("ai", default=list): _ai_list,
        vol.Optional("crm", default=list): _crm_list,
        vol.Optional("policy", default=dict): POLICY_SCHEMA,
        vol.Optional("conversations", default=dict): CONVERSATIONS_SCHEMA,
    }
)


def load_config(
    path: Path,
    *,
    sections: Mapping[str, Any],
    platforms: Mapping[str, type],
    ai_platforms: Mapping[str, type] = _NO_PLATFORMS,
    crm_platforms: Mapping[str, type] = _NO_PLATFORMS,
) -> dict[str, Any]:
    """Load ``path`` (with its secrets and includes) and validate it, with the
    templates of ``wahub.templates_dir`` (made relative to ``path``'s directory).

    Raises ``ConfigError`` listing every problem, including a missing file.
    """
    if not path.exists():
        raise ConfigError([ConfigProblem(str(path), None, "", "configuration file not found")])
    raw, load_problems = load_yaml(path)
    if raw is None:
        raw = NodeDict(file=str(path))
    config = validate_config(
        raw,
        sections=sections,
        platforms=platforms,
        ai_platforms=ai_platforms,
        crm_platforms=crm_platforms,
        load_problems=load_problems,
    )
    config["wahub"]["templates_dir"] = str(path.parent / config["wahub"]["templates_dir"])
    load_templates(Path(config["wahub"]["templates_dir"]))
    return config


def default_config(
    *,
    sections: Mapping[str, Any],
    platforms: Mapping[str, type],
    ai_platforms: Mapping[str, type] = _NO_PLATFORMS,
    crm_platforms: Mapping[str, type] = _NO_PLATFORMS,
) -> dict[str, Any]:
    """The configuration made of the schemas' defaults, used when no file is given."""
    return validate_config(
        {}, sections=sections, platforms=platforms, ai_platforms=ai_platforms, crm_platforms=crm_platforms
    )


def validate_config(
    raw: Any,
    *,
    sections: Mapping[str, Any],
    platforms: Mapping[str, type],
    ai_platforms: Mapping[str, type] = _NO_PLATFORMS,
    crm_platforms: Mapping[str, type] = _NO_PLATFORMS,
    load_problems: Sequence[ConfigProblem] = (),
) -> dict[str, Any]:
    """Validate a loaded tree in two passes and fill in the defaults.

    ``sections`` maps extra top-level section names to their schemas; an
    absent (or empty) section is validated as ``{}``. ``platforms`` maps the
    ``platform:`` values of ``providers:`` entries to provider classes,
    ``ai_platforms`` those of ``ai:`` entries to AI backend classes,
    ``crm_platforms`` those of ``crm:`` entries to CRM backend classes. Returns
    plain dicts and lists; raises ``ConfigError`` with every problem found,
    ``load_problems`` included.
    """
    tree = {} if raw is None else raw
    if not isinstance(tree, dict):
        mark = mark_of(tree)
        problem = ConfigProblem(
            mark.file if mark else DEFAULTS_SOURCE,
            mark.line if mark else None,
            "",
            "the configuration must be a mapping of sections (wahub:, providers:, ...)",
        )
        raise ConfigError(sorted_problems([*load_problems, problem]))
    plain = {key: value for key, value in to_plain(tree).items() if value is not None}
    checker = Checker(tree)
    top = checker.run(_top_schema(sections), plain, [])
    providers = _validate_entries(_PROVIDERS, plain, platforms, checker)
    ai = _validate_entries(_AI, plain, ai_platforms, checker)
    crm = _validate_entries(_CRM, plain, crm_platforms, checker)
    problems = checker.finish(load_problems)
    if problems or top is None:
        raise ConfigError(problems)
    core = {"wahub": top["wahub"], "providers": providers, "ai": ai, "crm": crm, "policy": top["policy"]}
    core["conversations"] = top["conversations"]
    config = {**core, **{name: top[name] for name in sections}}
    _check_references(config, sections, ai_platforms, Checker(tree))
    return config


def _check_references(
    config: Mapping[str, Any], sections: Mapping[str, Any], ai_platforms: Mapping[str, type], checker: Checker
) -> None:
    """What one part of a valid configuration names in another (a ``Section``'s
    ``references``, an AI backend's ``references``) must exist."""
    for name, schema in sections.items():
        if isinstance(schema, Section):
            for path, message in schema.references(config):
                checker.add([name, *path], message)
    for index, entry in enumerate(config["ai"]):
        references = getattr(ai_platforms[entry["platform"]], "references", None)
        for path, message in references(entry, config) if references else ():
            checker.add(["ai", index, *path], message)
    problems = checker.finish(())
    if problems:
        raise ConfigError(problems)


def _top_schema(sections: Mapping[str, Any]) -> vol.Schema:
    reserved = sorted(set(sections) & set(CORE_SECTIONS))
    if reserved:
        raise ValueError(f"plugin sections cannot be named {', '.join(reserved)}")
    extra = {vol.Optional(name, default=dict): schema for name, schema in sections.items()}
    return CORE_SCHEMA.extend(extra)


def _validate_entries(
    kind: _PlatformList, plain: Mapping[str, Any], platforms: Mapping[str, type], checker: Checker
) -> list[Any]:
    """Pass 1 (``platform`` names one of ``platforms``) and pass 2 (its class's
    ``CONFIG_SCHEMA``) for each entry of ``kind``'s list, then unique names."""
    entries = plain.get(kind.section, kind.default())
    if not isinstance(entries, list):
        return []  # pass 1 reported the shape
    entry_schema = _entry_schema(platforms)
    validated = []
    for index, entry in enumerate(entries):
        prefix = [kind.section, index]
        if _misspelled_platform_key(entry, prefix, checker):
            continue
        checked = checker.run(entry_schema, entry, prefix)
        if checked is None:
            continue
        platform_class: Any = platforms[checked["platform"]]
        result = checker.run(platform_class.CONFIG_SCHEMA, entry, prefix)
        if result is not None:
            validated.append(result)
    _check_unique_names(kind, entries, checker)
    return validated


def _misspelled_platform_key(entry: Any, prefix: list[Any], checker: Checker) -> bool:
    """Report the key of an entry without ``platform`` that looks like it (``platfrom``), if any.

    Without its platform an entry has no schema to check its keys against, so
    the one key every entry has is compared with the keys it has.
    """
    if not isinstance(entry, dict) or PLATFORM_KEY in entry:
        return False
    close = difflib.get_close_matches(PLATFORM_KEY, [key for key in entry if isinstance(key, str)], n=1)
    if not close:
        return False
    path = [*prefix, close[0]]
    checker.add(path, unknown_key(close[0], [PLATFORM_KEY]), checker.key_mark(path))
    return True


def _entry_schema(platforms: Mapping[str, type]) -> vol.Schema:
    available = ", ".join(sorted(platforms)) or "none installed"

    def platform(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected str")
        if value in platforms:
            return value
        shown = show(value)
        close = _close_platform(value, list(platforms))
        hint = f"did you mean '{close}'?; " if close else ""
        raise ExplainedInvalid(f"unknown platform {shown} ({hint}available: {available})")

    missing = f"required key 'platform' is missing (available: {available})"
    return vol.Schema({vol.Required("platform", msg=missing): platform}, extra=vol.ALLOW_EXTRA)


def _close_platform(value: str, names: list[str]) -> str | None:
    """The platform name closest to ``value``, compared whole and by its parts (``mta`` -> ``meta_cloud``)."""
    candidates = {name.lower(): name for name in names}
    for name in names:
        for part in name.split("_"):
            if len(part) >= 3:
                candidates.setdefault(part.lower(), name)
    close = difflib.get_close_matches(value.lower(), list(candidates), n=1)
    return candidates[close[0]] if close else None


def _check_unique_names(kind: _PlatformList, entries: list[Any], checker: Checker) -> None:
    first_use: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name not in first_use:
            first_use[name] = index
            continue
        earlier = first_use[name]
        _, mark, found = checker.walk([kind.section, earlier, "name"])
        where = f" (line {mark.line})" if found and mark else ""
        checker.add(
            [kind.section, index, "name"],
            f"{kind.noun} name {show(name)} is already used by {kind.section}[{earlier}]{where}; {kind.unique_because}",
        )
