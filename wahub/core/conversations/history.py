"""A conversation's history as a model reads it: messages as turns, owner
changes as dated notes.

A model that only sees turns resumes a conversation a person handled as if
nothing happened, or repeats its own "a person will answer you" forever; the
notes say, with their time, that a person was asked for, took over, and gave
the conversation back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wahub.core.ai import HistoryEntry
from wahub.core.models import OwnershipChange


def body_text(body: Mapping[str, Any]) -> str:
    """What a person reads of a stored message body (either direction): its
    text, caption, tapped reply or button, or the kind of message in brackets."""
    kind = str(body.get("type", ""))
    part = body.get(kind)
    if not isinstance(part, Mapping):
        return f"[{kind}]" if kind else ""
    if kind == "text":
        return str(part.get("body", ""))
    if kind == "interactive":
        chosen = part.get(str(part.get("type", "")))
        if isinstance(chosen, Mapping) and "title" in chosen:
            return str(chosen["title"])  # the user's tap
        text = part.get("body")
        return str(text.get("text", "")) if isinstance(text, Mapping) else "[interactive]"
    if kind == "button":
        return str(part.get("text", ""))
    if kind == "template":
        return f"[template {part.get('name', '')}]"
    if kind == "reaction":
        return f"[reaction {part.get('emoji', '')}]"
    caption = part.get("caption")
    return str(caption) if caption else f"[{kind}]"


def note_of(change: OwnershipChange) -> str:
    """An owner change in words, for the model."""
    reason = f": {change.reason}" if change.reason else ""
    if change.change == "queued":
        return f"The conversation was handed to a person{reason}. The bot stayed silent until it came back."
    if change.change == "assigned":
        return f"An operator ({change.assignee or 'unnamed'}) took over the conversation{reason}."
    if change.change == "released":
        return f"The operator gave the conversation back to the queue{reason}."
    if change.change == "phone":
        return "A person at the business answered from the WhatsApp Business app."
    return f"The conversation returned to the bot{reason}. The bot answers again from here."


def history_entries(rows: Sequence[Mapping[str, Any]], changes: Sequence[OwnershipChange]) -> list[HistoryEntry]:
    """Stored messages (``direction``, ``body``, ``created_at``) and owner changes, merged in time order."""
    entries = [
        HistoryEntry(
            "user" if row["direction"] == "in" else "assistant", body_text(row["body"]), float(row["created_at"])
        )
        for row in rows
    ]
    entries += [HistoryEntry("note", note_of(change), change.at) for change in changes]
    # Stable: a note at the same second as a message stays after it.
    return sorted((entry for entry in entries if entry.text), key=lambda entry: entry.at)
