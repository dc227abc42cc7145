"""The nodes the YAML loader builds: values that remember where they were written.

Mappings come back as ``NodeDict``, sequences as ``NodeList`` and strings as
``NodeStr``; each remembers the file and 1-based line it was written at.
Values read through ``!secret`` and ``!env_var`` are ``Secret`` strings, which
error messages print as ``***``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple


class Mark(NamedTuple):
    """Where a node was written: file name and 1-based line."""

    file: str
    line: int


class NodeStr(str):
    """A string scalar that remembers its file and line."""

    file: str | None
    line: int | None

    def __new__(cls, value: str = "", file: str | None = None, line: int | None = None) -> NodeStr:
        node = super().__new__(cls, value)
        node.file = file
        node.line = line
        return node


class Secret(NodeStr):
    """A string read through ``!secret`` or ``!env_var``.

    It behaves as a plain ``str`` (``str(secret)`` is the value, for use in
    headers and URLs), but its ``repr`` is masked and wahub's error messages
    print it as ``***``. ``file``/``line`` are where the tag was written;
    ``origin`` says where the value came from (``environment variable NAME``),
    for messages, or is None for ``!secret``.
    """

    origin: str | None = None

    def __repr__(self) -> str:
        return "Secret('***')"


def env_secret(value: str, mark: Mark, origin: str) -> Secret:
    """A ``Secret`` read through ``!env_var``; ``origin`` names its variable."""
    secret = Secret(value, *mark)
    secret.origin = origin
    return secret


class NodeList(list[Any]):
    """A sequence that remembers its own position and each item's."""

    def __init__(self, items: Iterable[Any] = (), file: str | None = None, line: int | None = None) -> None:
        super().__init__(items)
        self.file = file
        self.line = line
        self.item_marks: list[Mark] = []


class NodeDict(dict[Any, Any]):
    """A mapping that remembers its own position and, per key, the key's and the value's."""

    def __init__(self, file: str | None = None, line: int | None = None) -> None:
        super().__init__()
        self.file = file
        self.line = line
        self.key_marks: dict[Any, Mark] = {}
        self.value_marks: dict[Any, Mark] = {}


def mark_of(node: Any) -> Mark | None:
    """The position ``node`` remembers, or None (numbers, booleans, nulls)."""
    file = getattr(node, "file", None)
    line = getattr(node, "line", None)
    if isinstance(file, str) and isinstance(line, int):
        return Mark(file, line)
    return None


def to_plain(node: Any) -> Any:
    """A copy of a loaded tree made of plain dicts, lists and strs (Secrets stay Secrets)."""
    if isinstance(node, Secret):
        return node
    if isinstance(node, str):
        return str(node)
    if isinstance(node, dict):
        return {to_plain(key): to_plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [to_plain(item) for item in node]
    return node
