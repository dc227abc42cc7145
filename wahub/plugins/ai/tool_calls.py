"""The tool calls of a model's answer, checked before anything runs.

Each call must name a tool the request offered, with arguments that are a
JSON object matching that tool's JSON Schema; anything else makes the turn
fail (``BadToolCall``), since acting on arguments the model garbled could do
the wrong thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import exceptions as schema_errors  # type: ignore[import-untyped]
from jsonschema import validators

from wahub.core.ai import AITool

__all__ = ["BadToolCall", "ToolCall", "parse_tool_calls"]


class BadToolCall(Exception):
    """A call that cannot run; ``why`` is ``unknown_tool``, ``invalid_tool_arguments`` or ``invalid_tool_schema``."""

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(f"{why}: {detail}")
        self.why = why


@dataclass(frozen=True)
class ToolCall:
    """A checked call: the id the model gave it, the tool, and its arguments."""

    id: str
    tool: AITool
    arguments: dict[str, Any]


def parse_tool_calls(raw_calls: Sequence[Any], tools: Mapping[str, AITool]) -> list[ToolCall]:
    """Every call of ``raw_calls`` (a message's ``tool_calls``) checked against ``tools``."""
    return [_parse(raw, tools) for raw in raw_calls]


def _parse(raw: Any, tools: Mapping[str, AITool]) -> ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadToolCall("invalid_tool_arguments", "a tool call without a function name")
    name = function["name"]
    tool = tools.get(name)
    if tool is None:
        raise BadToolCall("unknown_tool", f"the model called {name!r}, which was not offered")
    text = function.get("arguments")
    try:
        arguments = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except json.JSONDecodeError as exc:
        raise BadToolCall("invalid_tool_arguments", f"the arguments of {name!r} are not JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise BadToolCall("invalid_tool_arguments", f"the arguments of {name!r} are not a JSON object")
    _check(tool, arguments)
    return ToolCall(str(raw.get("id") or ""), tool, arguments)


def _check(tool: AITool, arguments: dict[str, Any]) -> None:
    schema = dict(tool.parameters)
    validator_class = validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise BadToolCall("invalid_tool_schema", f"the parameters of {tool.name!r} are not a JSON Schema") from exc
    error = schema_errors.best_match(validator_class(schema).iter_errors(arguments))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(the arguments)"
        raise BadToolCall("invalid_tool_arguments", f"the arguments of {tool.name!r} do not match at {where}")
