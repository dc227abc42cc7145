"""What the send policy learns from a provider's refusal.

A provider says what its error means (``wahub.core.errors.ErrorMeaning``);
when the meaning carries a ``Lesson``, ``learn`` remembers it so the next such
message is refused before it is sent: the user's marketing opt-out goes into
the consent ledger, a paused or disabled template into the templates table.
The code itself is the provider's and is kept only as evidence.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from wahub.core.errors import Lesson
from wahub.core.models import OutgoingMessage

if TYPE_CHECKING:
    from wahub.core.storage.store import Storage

#: Status a template is given by each template lesson.
_TEMPLATE_STATUS = {Lesson.TEMPLATE_PAUSED: "PAUSED", Lesson.TEMPLATE_DISABLED: "DISABLED"}


async def learn_from_refusal(
    storage: Storage,
    provider: str,
    message: OutgoingMessage,
    lesson: Lesson | None,
    *,
    code: str | None,
    evidence: str,
) -> None:
    """Apply ``lesson`` (nothing when None) taught by the refusal of ``message``.
    ``code`` is the provider's error code and ``evidence`` names the refused
    message (wahub's id or the provider's); both go into the consent ledger."""
    if lesson is Lesson.OPTED_OUT:
        await storage.policy.record_consent(
            provider,
            message.to,
            action="opt_out",
            scope="marketing",
            source="provider_error",
            evidence={"error_code": code, "message": evidence},
            occurred_at=time.time(),
            event_key=f"error:{provider}:{evidence}",
        )
    elif lesson in _TEMPLATE_STATUS and message.type == "template":
        template = message.content["template"]
        name, language = template["name"], template["language"]["code"]
        await storage.policy.update_template(provider, name, language, status=_TEMPLATE_STATUS[lesson])
