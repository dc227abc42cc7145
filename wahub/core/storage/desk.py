"""What the operator inbox reads and writes besides ownership: the listing of
conversations with previews and unread counts, search, internal notes, how far
each operator has read, how many conversations each holds, and the alerts
about queued conversations nobody took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wahub.core.storage.engine import Database

#: The listing's sections, in the order the page shows them.
SECTIONS = ("queued", "mine", "open", "resolved")


@dataclass(frozen=True)
class Note:
    """An internal note: seen by operators, never sent."""

    id: int
    conversation_id: int
    author: str
    text: str
    created_at: float


class DeskStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def listing(
        self,
        *,
        operator_id: int,
        operator: str,
        section: str | None = None,
        search: str | None = None,
        only: Sequence[int] = (),
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Conversations as the inbox lists them, each with ``section`` set:

        - ``queued`` (owner queued): oldest hand-off first;
        - ``mine`` (assigned to ``operator``), ``open`` (assigned to another
          operator, or the business app's): latest activity first;
        - ``resolved`` (the bot's): latest activity first.

        ``section`` keeps one of them; ``search`` keeps those whose contact's
        name or address, or one of whose text messages, holds it (case-folded);
        ``only`` keeps those ids (for a live update). Row keys: the keys of
        ``ConversationStore.list``'s rows, plus ``section``, ``tags``,
        ``queued_at`` (when it was handed off, for queued ones), ``unread`` (its
        inbound messages after the last this operator read), and ``last`` (the
        latest message row: id, direction, type, body, status, error_code,
        created_at; None without messages). At most ``limit`` per section.
        """
        raise NotImplementedError

    async def mark_read(self, operator_id: int, conversation_id: int, message_id: int) -> None:
        """The operator has seen the conversation up to ``message_id`` (never moves back)."""
        raise NotImplementedError

    async def add_note(self, conversation_id: int, author: str, text: str, *, now: float) -> Note:
        """Store a note and its activity row, in one transaction."""
        raise NotImplementedError

    async def notes(self, conversation_id: int, *, since: float | None = None) -> list[Note]:
        """The conversation's notes, oldest first (from ``since`` on, if given)."""
        raise NotImplementedError

    async def notes_by_id(self, note_ids: Sequence[int]) -> list[Note]:
        raise NotImplementedError

    async def messages_by_id(self, message_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Message rows (every column), in id order."""
        raise NotImplementedError

    async def open_counts(self, operators: Sequence[str]) -> dict[str, int]:
        """How many conversations each operator holds now (assigned to them)."""
        raise NotImplementedError

    async def waiting_since(self, before: float, *, limit: int = 100) -> list[tuple[int, int, float]]:
        """Queued conversations handed off before ``before`` about which no alert
        went out yet: ``(conversation_id, event_id, queued_at)``, oldest first."""
        raise NotImplementedError

    async def mark_alerted(self, event_id: int, *, now: float) -> bool:
        """Record the alert about a hand-off; False when one was already recorded."""
        raise NotImplementedError
