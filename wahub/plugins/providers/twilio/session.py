"""Reply buttons and lists inside the service window, as Twilio sends them: a
Content API resource (``twilio/quick-reply``, ``twilio/list-picker``), which
needs no approval in a session, sent by its ``ContentSid``.

wahub makes one resource per distinct message and remembers its SID in the
``settings`` table (shared by every replica), so a menu sent a thousand times
is created once. The message's header and footer text go around the body,
since these content types carry neither; a list's sections are joined into
one list of rows (Twilio's list has no sections).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from wahub.core.errors import ProviderError

#: Content types Twilio sends in a session without an approved template.
SESSION_TYPES = frozenset({"twilio/quick-reply", "twilio/list-picker"})


def session_content(interactive: Mapping[str, Any]) -> dict[str, Any]:
    """The Content API body (without its name) for a canonical ``interactive``
    of type ``button`` or ``list``."""
    header = interactive.get("header") or {}
    if header and header.get("type", "text") != "text":
        raise ProviderError(
            "Twilio's session buttons and lists carry no media header: send the file first, or use a template",
            code="unsupported",
        )
    parts = (header.get("text"), interactive["body"]["text"], (interactive.get("footer") or {}).get("text"))
    body = "\n\n".join(part for part in parts if part)
    action = interactive["action"]
    if interactive["type"] == "button":
        actions = [{"title": b["reply"]["title"], "id": b["reply"]["id"]} for b in action["buttons"]]
        return {"language": "en", "types": {"twilio/quick-reply": {"body": body, "actions": actions}}}
    items = [
        {
            "item": row["title"],
            "id": row["id"],
            **({"description": row["description"]} if row.get("description") else {}),
        }
        for section in action["sections"]
        for row in section["rows"]
    ]
    return {
        "language": "en",
        "types": {"twilio/list-picker": {"body": body, "button": action["button"], "items": items}},
    }


def content_key(account_sid: str, content: Mapping[str, Any]) -> tuple[str, str]:
    """The settings key remembering ``content``'s SID, and the resource's friendly name."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"twilio:{account_sid}:session:{digest[:40]}", f"wahub_session_{digest[:16]}"
