"""Registering a business phone number on Meta's Cloud API and setting its
two-step verification PIN: ``CloudNumber``, part of ``MetaCloudProvider``
(``wahub number register|pin``).

``POST /{phone-number-id}/register`` with ``messaging_product`` and the
six-digit ``pin`` puts the number on the Cloud API (a number that already has
a PIN must be given that PIN); ``POST /{phone-number-id}`` with ``pin`` sets a
new PIN. The PIN is a secret: it is checked before anything is sent, and it
never appears in a log line, an error or an answer.
"""

from __future__ import annotations

import re
from typing import Any

from wahub.core.errors import ProviderError
from wahub.plugins.providers.cloud.account import CloudAccount

PIN = re.compile(r"^[0-9]{6}$")
_HIDDEN = "******"

#: What Meta's registration and PIN codes ask of the person running the command.
_HINTS = {
    "131031": "the account is locked, or the PIN data is wrong: see the number in WhatsApp Manager",
    "133005": "the PIN does not match the number's two-step verification PIN: "
    "give the PIN set before, or reset it in WhatsApp Manager",
    "133006": "the number must be verified again (request_code and verify_code) before it can be registered",
    "133008": "too many wrong PINs: wait before trying again",
    "133009": "PINs were tried too fast: wait before trying again",
    "133010": "the number is not registered on the Cloud API: run 'wahub number register' first",
    "133015": "the number was deleted a moment ago: wait about 5 minutes before registering it",
    "133016": "too many registrations or deregistrations of this number: wait before trying again",
}


def pin_problem(pin: object) -> str | None:
    """Why ``pin`` is not a two-step verification PIN (six digits), without repeating it; None when it is."""
    if not isinstance(pin, str) or not PIN.match(pin):
        return "the two-step verification PIN must be exactly six digits (0-9)"
    return None


class CloudNumber(CloudAccount):
    """The business phone number's registration and two-step PIN, over ``call``."""

    phone_number_id: str | None

    async def register_number(self, pin: str) -> dict[str, Any]:
        """Register the number on the Cloud API with its two-step ``pin``."""
        await self._pin_call("register", {"messaging_product": "whatsapp", "pin": pin}, pin)
        return {"phone_number_id": self.phone_number_id, "registered": True}

    async def set_two_step_pin(self, pin: str) -> dict[str, Any]:
        """Set the number's two-step verification PIN to ``pin``."""
        await self._pin_call("", {"pin": pin}, pin)
        return {"phone_number_id": self.phone_number_id, "two_step_pin": "set"}

    async def _pin_call(self, action: str, body: dict[str, Any], pin: str) -> None:
        problem = pin_problem(pin)
        if problem is not None:
            raise ProviderError(problem, code="pin")
        if not self.phone_number_id:
            raise ProviderError(f"set phone_number_id in provider {self.name!r}", code="config")
        path = f"{self.phone_number_id}/{action}" if action else str(self.phone_number_id)
        try:
            await self.call("POST", path, json=body)
        except ProviderError as exc:
            text = str(exc).replace(pin, _HIDDEN)
            hint = _HINTS.get(exc.code or "")
            raise ProviderError(f"{hint} ({text})" if hint else text, code=exc.code, meaning=exc.meaning) from None
