"""Problems in a configuration, and how they are located and written.

A ``ConfigProblem`` is one mistake at a file and line (and, for YAML syntax,
a column); ``ConfigError`` carries every problem found. ``Checker`` runs
voluptuous schemas over parts of a loaded tree and turns their errors into
problems that point at the YAML line of the offending key or value. Values
read through ``!secret`` and ``!env_var`` are printed as ``***``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import voluptuous as vol

from wahub.core.config.nodes import Mark, Secret, mark_of
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.errors import ConfigProblem

#: File name shown in problems about the embedded defaults (no file given).
DEFAULTS_SOURCE = "<embedded defaults>"

_EXTRA_KEY = "extra keys not allowed"
_REQUIRED_KEY = "required key not provided"
# Hides the password of `scheme://user:password@host` when a value is echoed.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# Shorter secrets would mask ordinary words in messages; they are still never echoed.
_MIN_SCRUBBED_SECRET = 4


def format_path(parts: Iterable[Any]) -> str:
    """``["router", "rules", 0, "match"]`` -> ``router.rules[0].match``."""
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
            continue
        name = "***" if isinstance(part, Secret) else str(part)
        text = f"{text}.{name}" if text else name
    return text


def show(value: Any) -> str:
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


def sorted_problems(problems: Sequence[ConfigProblem]) -> list[ConfigProblem]:
    """``problems`` by file, then line, then path."""
    return sorted(problems, key=lambda problem: (problem.file, problem.line or 0, problem.path))


def unknown_key(key: Any, allowed: Sequence[str]) -> str:
    """The message for ``key`` where only ``allowed`` keys may be: the closest one, or all of them."""
    message = f"unknown key {show(key)}"
    close = difflib.get_close_matches(str(key), list(allowed), n=1) if isinstance(key, str) else []
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    if allowed:
        return f"{message} (allowed keys: {', '.join(allowed)})"
    return message


class Checker:
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
            self.add(path, unknown_key(path[-1], _allowed_keys(schema, relative[:-1])), self.key_mark(path))
        elif isinstance(error, vol.RequiredFieldInvalid) and path:
            message = error.error_message
            if message == _REQUIRED_KEY:
                message = f"required key {show(path[-1])} is missing"
            self.add(path[:-1], message)
        else:
            value, _, found = self.walk(path)
            message = error.error_message
            if found and not isinstance(error, ExplainedInvalid):
                message = f"{message}, got {show(value)}"
            if found and isinstance(value, Secret) and value.origin:
                message = f"{message} ({value.origin})"
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

    def key_mark(self, path: Sequence[Any]) -> Mark | None:
        """Where the last key of ``path`` is written, if it is."""
        parent, _, _ = self.walk(path[:-1])
        key_marks: dict[Any, Mark] = getattr(parent, "key_marks", {})
        return key_marks.get(path[-1])

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
        return sorted_problems([*load_problems, *own])


def _has_key(node: dict[Any, Any], step: Any) -> bool:
    try:
        return step in node
    except TypeError:
        return False


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
