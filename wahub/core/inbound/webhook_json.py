"""Webhook JSON that every database takes: reading it, and checking it.

A signed webhook can still carry values no database stores or reads back: a
lone surrogate (legal JSON, ``"\\udc00"``, but not UTF-8), a NUL character
(PostgreSQL refuses it in text), a number beyond a float or a 64-bit integer
(``1e400`` reads as infinity), nesting deeper than anything a provider sends.
``read_json`` parses a body without losing the rest of it to one such value:
out-of-range numbers and over-deep parts become ``Unstorable`` markers in
place. ``storable_problem`` names the first value in a structure that cannot
be stored, so intake can set that one item aside and keep the others.
"""

from __future__ import annotations

import json
import math
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.privacy import mask_digits

#: Deepest nesting of objects and arrays kept; provider bodies nest about eight levels.
MAX_DEPTH = 64
#: Deepest nesting ``storable_problem`` lets through: an event wraps what it read in
#: a few levels of its own.
MAX_STORED_DEPTH = 2 * MAX_DEPTH
#: Integers ``read_json`` keeps: SQLite and PostgreSQL read JSON integers as 64-bit.
_INT_RANGE = range(-(2**63), 2**63)
#: Integers beyond about 4300 digits, Python does not write as text at all.
_MAX_INT_BITS = 14_000


class Unstorable:
    """Where ``read_json`` found a value no database takes; ``reason`` says what it was."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unstorable: {self.reason}>"


def _number_text(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def _read_float(text: str) -> float | Unstorable:
    number = float(text)
    return number if math.isfinite(number) else Unstorable(f"the number {_number_text(text)} is out of range")


def _read_int(text: str) -> int | Unstorable:
    # Checked on the text first: int() refuses more than 4300 digits with a ValueError.
    if len(text.lstrip("-")) <= 19:
        number = int(text)
        if number in _INT_RANGE:
            return number
    return Unstorable(f"the integer {_number_text(text)} is out of range")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(body: bytes) -> Any:
    """``body`` parsed; raises ``WebhookError`` when it is not JSON at all.

    Numbers no database stores, and objects or arrays nested deeper than
    ``MAX_DEPTH``, are replaced by ``Unstorable`` markers, so the rest of the
    body still reads.
    """
    try:
        data = json.loads(body, parse_constant=_refuse_constant, parse_float=_read_float, parse_int=_read_int)
    except RecursionError as exc:
        raise WebhookError("body is not JSON wahub can read: it is nested too deeply") from exc
    except ValueError as exc:  # UnicodeDecodeError too: bytes that are not UTF-8
        raise WebhookError(f"body is not JSON: {exc}") from exc
    # Fewer brackets than levels allowed (strings' included): nothing can be too deep.
    return data if body.count(b"[") + body.count(b"{") <= MAX_DEPTH else _cut_deep(data)


def _cut_deep(data: Any) -> Any:
    """``data`` with each object or array deeper than ``MAX_DEPTH`` replaced by a marker."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        keys = node.keys() if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        for key in keys:
            child = node[key]
            if isinstance(child, (dict, list)):
                if depth >= MAX_DEPTH:
                    node[key] = Unstorable(f"nested deeper than {MAX_DEPTH} levels")
                else:
                    stack.append((child, depth + 1))
    return data


def storable_problem(value: Any, path: str = "") -> str | None:
    """What makes ``value`` (plain JSON data) unstorable, naming where, or None.

    Checks every string (and object key) for text UTF-8 cannot encode and for
    NUL characters, every float for being finite and every integer for being
    writable, the nesting depth, and that only
    JSON types occur. The values themselves never appear in the answer: they
    may be phone numbers or message text.
    """
    if _plainly_storable(value):
        return None
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        problem = _scalar_problem(node)
        if problem is not None:
            return f"{where or 'the value'}: {problem}"
        if isinstance(node, (dict, list, tuple)):
            if depth >= MAX_STORED_DEPTH:
                return f"{where or 'the value'}: nested deeper than {MAX_STORED_DEPTH} levels"
            items = list(node.items() if isinstance(node, dict) else enumerate(node))
            for key, _child in items:
                if isinstance(key, str) and text_problem(key):
                    return f"{where or 'the value'}: a key {text_problem(key)}"
            # Reversed onto the stack, so the first problem in reading order is named.
            for key, child in reversed(items):
                stack.append((child, f"{where}.{_path_key(key)}" if where else _path_key(key), depth + 1))
    return None


def _plainly_storable(value: Any) -> bool:
    """True when ``value`` is certainly storable, checked at C speed: JSON writes
    it without NaN or markers, it encodes to UTF-8, and it holds no NUL and
    fewer containers than the depth allowed. False only means that the exact,
    slower walk must decide."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode()
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return "\\u0000" not in text and text.count("[") + text.count("{") <= MAX_STORED_DEPTH


def _path_key(key: Any) -> str:
    """A key as a path names it: ASCII, at most 40 characters, long digit runs
    masked (a hostile body may use phone numbers as keys)."""
    text = ascii(key)[1:-1] if isinstance(key, str) else str(key)
    return mask_digits(text[:40])


def _scalar_problem(node: Any) -> str | None:
    if node is None or isinstance(node, (bool, dict, list, tuple)):
        return None
    if isinstance(node, str):
        problem = text_problem(node)
        return f"text {problem}" if problem else None
    if isinstance(node, int):
        return None if node.bit_length() <= _MAX_INT_BITS else "an integer too long to write as JSON"
    if isinstance(node, float):
        return None if math.isfinite(node) else "a number that is not finite"
    if isinstance(node, Unstorable):
        return node.reason
    return f"a {type(node).__name__}, which JSON cannot carry"


def text_problem(text: str) -> str | None:
    """Why a database cannot keep ``text`` (a lone surrogate, a NUL character), or None."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return "that is not valid Unicode (a lone surrogate)"
    if "\x00" in text:
        return "holding a NUL character"
    return None
