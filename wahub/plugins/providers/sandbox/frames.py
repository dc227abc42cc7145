"""The frames of the sandbox chat socket: stored messages as the page shows
them, the user's text checked against WhatsApp's limits, and receipts as
status events."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from wahub.core.http.api_io import storable

#: The longest text message a WhatsApp user can send.
MAX_TEXT = 4096


def frame_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message (or an outgoing body) as the chat page shows it."""
    body = row["body"]
    kind = body.get("type", "text")
    content = body.get(kind, {})
    text, buttons = "", []
    if kind == "text":
        text = content.get("body", "")
    elif kind == "interactive":
        text = content.get("body", {}).get("text", "") or content.get(content.get("type", ""), {}).get("title", "")
        buttons = [b["reply"] for b in content.get("action", {}).get("buttons", []) if "reply" in b]
    elif isinstance(content, dict):
        text = content.get("caption") or content.get("body") or f"[{kind}]"
    return {
        "id": row.get("provider_message_id") or f"wahub.{row.get('id')}",
        "direction": row["direction"],
        "type": kind,
        "text": text,
        "buttons": buttons,
        "status": row["status"],
        "timestamp": row["created_at"],
    }


def text_problem(text: Any) -> str | None:
    """Why ``text`` cannot be a user's message (WhatsApp's own limits), or None."""
    if not isinstance(text, str) or not text.strip():
        return "a text frame needs 'text': the message, as a string"
    if len(text) > MAX_TEXT:
        return f"a message is at most {MAX_TEXT} characters"
    if not storable(text):
        return "the text holds a NUL character or an unpaired surrogate"
    return None


def receipt_events(user: str, frame: Mapping[str, Any]) -> list[dict[str, Any]]:
    status = {"received": "delivered", "seen": "read"}[str(frame["type"])]
    ids = frame.get("ids")
    if not isinstance(ids, list):
        return []
    return [
        {
            "type": "status",
            "id": f"{message_id}:{status}",
            "message_id": str(message_id),
            "recipient": user,
            "status": status,
            "timestamp": time.time(),
        }
        for message_id in ids[:100]
        if str(message_id).startswith("sbx.out.")
    ]


def valid_ref(ref: Any) -> bool:
    return isinstance(ref, str) and 1 <= len(ref) <= 64
