"""Validation of wahub's configuration, and the schema of its core sections.

Validation runs in two passes. Pass 1 checks the top level: the core sections
(``wahub``, ``providers``), the sections plugins contribute (``router``, ...)
and, for each provider entry, that ``platform`` names an installed platform.
Pass 2 checks each provider entry against its platform's ``CONFIG_SCHEMA``.
Every problem of both passes is reported at once, as ``file:line: path:
message``, pointing at the YAML line of the offending key or value; values
read through ``!secret``/``!env_var`` are printed as ``***``.

Defaults live in the schemas only, so ``default_config`` (validating an empty
configuration) is the configuration wahub runs on when no file is given.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import voluptuous as vol

from wahub.core.config.loader import (
    ConfigError,
    ConfigProblem,
    Mark,
    NodeDict,
    Secret,
    format_path,
    load_yaml,
    mark_of,
    to_plain,
)
from wahub.core.http.serving import HTTP_LIMIT_KEYS
from wahub.core.policy.checks import POLICY_SCHEMA
from wahub.core.storage.media import MEDIA_SCHEMA

__all__ = [
    "CORE_SCHEMA",
    "HTTP_SCHEMA",
    "WAHUB_SCHEMA",
    "ConfigError",
    "ConfigProblem",
    "database_url",
    "default_config",
    "int_between",
    "load_config",
    "validate_config",
]

#: File name shown in problems about the embedded defaults (no file given).
DEFAULTS_SOURCE = "<embedded defaults>"

DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_API_TOKEN_LENGTH = 16

_EXTRA_KEY = "extra keys not allowed"
_REQUIRED_KEY = "required key not provided"
# Hides the password of `scheme://user:password@host` when a value is echoed.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# Shorter secrets would mask ordinary words in messages; they are still never echoed.
_MIN_SCRUBBED_SECRET = 4


class ExplainedInvalid(vol.Invalid):
    """A validation error whose message is complete: the offending value is not appended."""


def int_between(low: int, high: int) -> Callable[[Any], int]:
    """A validator for an int in ``[low, high]``; digit strings (from ``!env_var``) are converted."""

    def validate(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise vol.Invalid("expected int")
        if not low <= value <= high:
            raise vol.Invalid(f"expected an int between {low} and {high}")
        return value

    return validate


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
    }
)

#: The core top-level sections. Provider entries are only checked for shape
#: here; each entry is validated on its own (pass 1 ``platform``, pass 2 its
#: platform's ``CONFIG_SCHEMA``).
CORE_SCHEMA = vol.Schema(
    {
        vol.Optional("wahub", default=dict): WAHUB_SCHEMA,
        vol.Optional("providers", default=_default_providers): _provider_list,
        vol.Optional("policy", default=dict): POLICY_SCHEMA,
    }
)


def load_config(path: Path, *, sections: Mapping[str, Any], platforms: Mapping[str, type]) -> dict[str, Any]:
    """Load ``path`` (with its secrets and includes) and validate it.

    Raises ``ConfigError`` listing every problem, including a missing file.
    """
    if not path.exists():
        raise ConfigError([ConfigProblem(str(path), None, "", "configuration file not found")])
    raw, load_problems = load_yaml(path)
    if raw is None:
        raw = NodeDict(file=str(path))
    return validate_config(raw, sections=sections, platforms=platforms, load_problems=load_problems)


def default_config(*, sections: Mapping[str, Any], platforms: Mapping[str, type]) -> dict[str, Any]:
    """The configuration made of the schemas' defaults, used when no file is given."""
    return validate_config({}, sections=sections, platforms=platforms)


def validate_config(
    raw: Any,
    *,
    sections: Mapping[str, Any],
    platforms: Mapping[str, type],
    load_problems: Sequence[ConfigProblem] = (),
) -> dict[str, Any]:
    """Validate a loaded tree in two passes and fill in the defaults.

    ``sections`` maps extra top-level section names to their schemas; an
    absent (or empty) section is validated as ``{}``. ``platforms`` maps
    ``platform:`` values to provider classes. Returns plain dicts and lists;
    raises ``ConfigError`` with every problem found, ``load_problems`` included.
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
        raise ConfigError(_sorted([*load_problems, problem]))
    plain = {key: value for key, value in to_plain(tree).items() if value is not None}
    checker = _Checker(tree)
    top = checker.run(_top_schema(sections), plain, [])
    providers = _validate_providers(plain.get("providers", _default_providers()), platforms, checker)
    problems = checker.finish(load_problems)
    if problems or top is None:
        raise ConfigError(problems)
    core = {"wahub": top["wahub"], "providers": providers, "policy": top["policy"]}
    return {**core, **{name: top[name] for name in sections}}


def _top_schema(sections: Mapping[str, Any]) -> vol.Schema:
    reserved = sorted(set(sections) & {"wahub", "providers", "policy"})
    if reserved:
        raise ValueError(f"plugin sections cannot be named {', '.join(reserved)}")
    extra = {vol.Optional(name, default=dict): schema for name, schema in sections.items()}
    return CORE_SCHEMA.extend(extra)


def _validate_providers(entries: Any, platforms: Mapping[str, type], checker: _Checker) -> list[Any]:
    if not isinstance(entries, list):
        return []  # pass 1 reported the shape
    entry_schema = _provider_entry_schema(platforms)
    validated = []
    for index, entry in enumerate(entries):
        prefix = ["providers", index]
        checked = checker.run(entry_schema, entry, prefix)
        if checked is None:
            continue
        provider_class: Any = platforms[checked["platform"]]
        result = checker.run(provider_class.CONFIG_SCHEMA, entry, prefix)
        if result is not None:
            validated.append(result)
    _check_unique_names(entries, checker)
    return validated


def _provider_entry_schema(platforms: Mapping[str, type]) -> vol.Schema:
    available = ", ".join(sorted(platforms)) or "none installed"

    def platform(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected str")
        if value in platforms:
            return value
        shown = _show(value)
        close = difflib.get_close_matches(value, list(platforms), n=1)
        hint = f"did you mean '{close[0]}'?; " if close else ""
        raise ExplainedInvalid(f"unknown platform {shown} ({hint}available: {available})")

    missing = f"required key 'platform' is missing (available: {available})"
    return vol.Schema({vol.Required("platform", msg=missing): platform}, extra=vol.ALLOW_EXTRA)


def _check_unique_names(entries: list[Any], checker: _Checker) -> None:
    first_use: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name not in first_use:
            first_use[name] = index
            continue
        earlier = first_use[name]
        _, mark, found = checker.walk(["providers", earlier, "name"])
        where = f" (line {mark.line})" if found and mark else ""
        checker.add(
            ["providers", index, "name"],
            f"provider name {_show(name)} is already used by providers[{earlier}]{where}; "
            "each name is a webhook path (/webhooks/<name>), so names must be unique",
        )


class _Checker:
    """Runs schemas over parts of the tree and turns their errors into located problems."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        root = mark_of(tree)
        self.root_file = root.file if root else DEFAULTS_SOURCE
        self.problems: list[ConfigProblem] = []

    def run(self, schema: vol.Schema, data: Any, prefix: list[Any]) -> Any:
        """``schema(data)``, or None after recording its errors (paths under ``prefix``)."""
        try:
            return schema(data)
        except vol.Invalid as err:
            errors = err.errors if isinstance(err, vol.MultipleInvalid) else [err]
            for error in errors:
                self._record(error, schema, prefix)
            return None

    def _record(self, error: vol.Invalid, schema: vol.Schema, prefix: list[Any]) -> None:
        relative = [step.schema if isinstance(step, vol.Marker) else step for step in error.path]
        path = [*prefix, *relative]
        if error.error_message == _EXTRA_KEY and path:
            parent, _, _ = self.walk(path[:-1])
            key_marks: dict[Any, Mark] = getattr(parent, "key_marks", {})
            allowed = _allowed_keys(schema, relative[:-1])
            self.add(path, _unknown_key(path[-1], allowed), key_marks.get(path[-1]))
        elif isinstance(error, vol.RequiredFieldInvalid) and path:
            message = error.error_message
            if message == _REQUIRED_KEY:
                message = f"required key {_show(path[-1])} is missing"
            self.add(path[:-1], message)
        else:
            value, _, found = self.walk(path)
            message = error.error_message
            if found and not isinstance(error, ExplainedInvalid):
                message = f"{message}, got {_show(value)}"
            self.add(path, message)

    def add(self, path: list[Any], message: str, mark: Mark | None = None) -> None:
        """Record a problem at ``path``, located at ``mark`` or at the node found there."""
        if mark is None:
            _, nearest, found = self.walk(path)
            file = nearest.file if nearest else self.root_file
            line = nearest.line if nearest and found else None
        else:
            file, line = mark
        self.problems.append(ConfigProblem(file, line, format_path(path), message))

    def walk(self, path: Sequence[Any]) -> tuple[Any, Mark | None, bool]:
        """The node at ``path`` in the loaded tree, its position, and whether it exists."""
        node, mark = self.tree, mark_of(self.tree)
        for step in path:
            if isinstance(node, dict) and _has_key(node, step):
                value_marks: dict[Any, Mark] = getattr(node, "value_marks", {})
                mark = value_marks.get(step) or mark_of(node[step]) or mark
                node = node[step]
            elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
                item_marks: list[Mark] = getattr(node, "item_marks", [])
                mark = item_marks[step] if step < len(item_marks) else mark_of(node[step]) or mark
                node = node[step]
            else:
                return node, mark, False
        return node, mark, True

    def finish(self, load_problems: Sequence[ConfigProblem]) -> list[ConfigProblem]:
        """All problems, sorted; a validation problem at a path a load problem explains is dropped."""
        explained = {(problem.file, problem.line, problem.path) for problem in load_problems}
        secrets = _secret_values(self.tree)
        own = [
            ConfigProblem(problem.file, problem.line, problem.path, _scrub(problem.message, secrets))
            for problem in self.problems
            if (problem.file, problem.line, problem.path) not in explained
        ]
        return _sorted([*load_problems, *own])


def _has_key(node: dict[Any, Any], step: Any) -> bool:
    try:
        return step in node
    except TypeError:
        return False


def _sorted(problems: Sequence[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda problem: (problem.file, problem.line or 0, problem.path))


def _unknown_key(key: Any, allowed: list[str]) -> str:
    message = f"unknown key {_show(key)}"
    close = difflib.get_close_matches(str(key), allowed, n=1) if isinstance(key, str) else []
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    if allowed:
        return f"{message} (allowed keys: {', '.join(allowed)})"
    return message


def _show(value: Any) -> str:
    """How a value appears in a message: secrets masked, long values cut."""
    if isinstance(value, Secret):
        return "***"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(str(value)) if isinstance(value, str) else repr(value)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _secret_values(node: Any) -> set[str]:
    if isinstance(node, Secret):
        return {str(node)} if len(node) >= _MIN_SCRUBBED_SECRET else set()
    if isinstance(node, dict):
        return set().union(*(_secret_values(item) for pair in node.items() for item in pair))
    if isinstance(node, list):
        return set().union(*(_secret_values(item) for item in node))
    return set()


def _scrub(message: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _schema_parts(schema: Any) -> list[Any]:
    """The dict and list schemas ``schema`` is made of (through Schema, All, Any...)."""
    if isinstance(schema, vol.Schema):
        return _schema_parts(schema.schema)
    validators = getattr(schema, "validators", None)
    if isinstance(validators, (list, tuple)):
        return [part for validator in validators for part in _schema_parts(validator)]
    if isinstance(schema, (dict, list)):
        return [schema]
    return []


def _schema_children(schema: Any, step: Any) -> list[Any]:
    children: list[Any] = []
    for part in _schema_parts(schema):
        if isinstance(part, list) and isinstance(step, int):
            children.extend(part)
        elif isinstance(part, dict):
            for key, value in part.items():
                name = key.schema if isinstance(key, vol.Marker) else key
                if name == step or (isinstance(name, type) and isinstance(step, name)):
                    children.append(value)
    return children


def _allowed_keys(schema: Any, path: Sequence[Any]) -> list[str]:
    """The literal keys ``schema`` allows in the mapping at ``path``."""
    nodes = [schema]
    for step in path:
        nodes = [child for node in nodes for child in _schema_children(node, step)]
    keys: set[str] = set()
    for node in nodes:
        for part in _schema_parts(node):
            if isinstance(part, dict):
                names = (key.schema if isinstance(key, vol.Marker) else key for key in part)
                keys.update(name for name in names if isinstance(name, str))
    return sorted(keys)
