"""The frames of the sandbox chat socket: stored messages as the page shows
them, the user's text checked against WhatsApp's limits, receipts as status
events, and what the business "typed on its phone" as echo events."""

from __future__ import annotations

import time
import uuid
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
    elif kind == "template":
        text = f"[template {content.get('name')}]"
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


def shown_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook event the sandbox just posted (a user's message or an echo) as
    the chat page shows it; an echo is the business's, marked ``from_phone``."""
    echo = event["type"] == "echo"
    row = {
        "body": event["message"],
        "provider_message_id": event["id"],
        "direction": "out" if echo else "in",
        "status": "sent" if echo else "received",
        "created_at": event["timestamp"],
    }
    shown = frame_message(row)
    return {**shown, "from_phone": True} if echo else shown


def echo_event(user: str, frame: Mapping[str, Any]) -> dict[str, Any] | None:
    """The webhook event of an ``echo`` frame: a text the business sent ``user``
    from the WhatsApp Business app (a coexistence echo); None if its text is
    not a message (see ``text_problem``)."""
    if text_problem(frame.get("text"), frame="an echo frame") is not None:
        return None
    message: dict[str, Any] = {"type": "text", "text": {"body": frame["text"]}}
    if frame.get("context"):
        message["context"] = {"id": str(frame["context"])}
    return {
        "type": "echo",
        "id": f"sbx.echo.{uuid.uuid4().hex}",
        "to": user,
        "timestamp": time.time(),
        "message": message,
    }


def text_problem(text: Any, *, frame: str = "a text frame") -> str | None:
    """Why ``text`` cannot be a message (WhatsApp's own limits), or None;
    ``frame`` names the frame that carried it."""
    if not isinstance(text, str) or not text.strip():
        return f"{frame} needs 'text': the message, as a string"
    if len(text) > MAX_TEXT:
        return f"a message is at most {MAX_TEXT} characters"
    if not storable(text):
        return "the text holds a NUL character or an unpaired surrogate"
    return None


#: The frames carrying a text that was typed, as an error names them.
_TEXT_FRAMES = {"text": "a text frame", "echo": "an echo frame"}


def refusal(frame: Mapping[str, Any]) -> str:
    """What the error answering a frame that makes no event says: why its text
    is not a message, or that such a frame cannot be sent."""
    kind = frame.get("type")
    named = _TEXT_FRAMES.get(kind) if isinstance(kind, str) else None
    problem = text_problem(frame.get("text"), frame=named) if named else None
    return problem or f"cannot send a {kind!r} frame"


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
