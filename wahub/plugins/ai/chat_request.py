"""The messages and tools of a Chat Completions request, made from an ``AIRequest``.

The request is: one system message (the prompt, the language to answer in,
the FAQ as knowledge), then the latest history as ``user`` and ``assistant``
turns with ownership notes as system messages dated in UTC ("[2026-12-01
10:00 UTC] The conversation was handed to a person: reason"), then the turn's
messages as ``user`` turns. The conversation's texts may be redacted first;
the business's own texts (prompt, knowledge) are sent as written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from wahub.core.ai import HANDOFF_TOOL, AIRequest, AITool, HistoryEntry
from wahub.plugins.ai.redact import redact

__all__ = ["HANDOFF", "build_messages", "offered_tools", "tool_payload"]

#: The hand-off tool a request offers when the core did not pass one of its own.
HANDOFF = AITool(
    name=HANDOFF_TOOL,
    description=(
        "Hand the conversation to a person of the business: when the contact asks for a person, "
        "when you cannot help, or when the matter needs a person (a complaint, a refund, an emergency). "
        "After calling it, do not answer further; a person will."
    ),
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "minLength": 1, "description": "Why, in a few words."}},
        "required": ["reason"],
        "additionalProperties": False,
    },
)


def build_messages(
    request: AIRequest,
    *,
    system_prompt: str,
    knowledge: Sequence[tuple[str, str]] = (),
    history_messages: int,
    redact_kinds: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The ``messages`` of the request answering ``request`` (see the module's docstring)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_text(system_prompt, request, knowledge)}]
    for entry in recent_history(request.history, history_messages):
        if entry.role == "note":
            messages.append(
                {"role": "system", "content": f"[{utc_minute(entry.at)}] {redact(entry.text, redact_kinds)}"}
            )
        else:
            messages.append({"role": entry.role, "content": redact(entry.text, redact_kinds)})
    for text in request.messages:
        if text:
            messages.append({"role": "user", "content": redact(text, redact_kinds)})
    return messages


def system_text(prompt: str, request: AIRequest, knowledge: Sequence[tuple[str, str]]) -> str:
    """The system message: the prompt, the language, the time, and the knowledge if any."""
    parts = [
        prompt.strip(),
        f"Answer in the contact's language, {request.language} (a BCP 47 code), whatever language the "
        "earlier messages are in.",
    ]
    if request.now:
        parts.append(f"It is now {utc_minute(request.now)}.")
    if knowledge:
        facts = "\n\n".join(f"Q: {question}\nA: {answer.strip()}" for question, answer in knowledge)
        parts.append(
            "The business's answers to frequent questions; rely on them, and do not contradict them:\n\n" + facts
        )
    return "\n\n".join(parts)


def recent_history(history: Sequence[HistoryEntry], messages: int) -> list[HistoryEntry]:
    """The last ``messages`` user and assistant entries of ``history``, with the
    notes among them (notes do not count)."""
    if messages <= 0:
        return []
    kept: list[HistoryEntry] = []
    counted = 0
    for entry in reversed(history):
        if entry.role != "note":
            if counted == messages:
                break
            counted += 1
        kept.append(entry)
    return kept[::-1]


def utc_minute(at: float) -> str:
    """Unix seconds as ``2026-12-01 10:00 UTC``."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def offered_tools(request: AIRequest) -> dict[str, AITool]:
    """The tools the model is offered, by name: the request's, and the hand-off
    tool unless the request has its own."""
    tools = {HANDOFF.name: HANDOFF}
    for tool in request.tools:
        tools[tool.name] = tool
    return tools


def tool_payload(tools: Mapping[str, AITool]) -> list[dict[str, Any]]:
    """The ``tools`` of the request, in OpenAI's function shape."""
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
        }
        for tool in tools.values()
    ]
