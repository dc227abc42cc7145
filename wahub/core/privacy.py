"""How a user's address appears in a log line: only its last four characters.

Every log line that names a user's phone number, BSUID, username or group id
passes it through ``mask_address``; text that may quote it (a refusal's
reason, a provider's error) passes through ``masked``.
"""

from __future__ import annotations

import re

#: How many trailing characters of an address a log line keeps.
SHOWN = 4
#: A run of digits long enough to be a phone number or a wa_id.
_NUMBER = re.compile(r"\d{5,}")


def mask_address(address: object) -> str:
    """``15551234567`` as ``***4567``; an address of four characters or fewer as ``***``."""
    text = str(address)
    return f"***{text[-SHOWN:]}" if len(text) > SHOWN else "***"


def masked(text: str, *addresses: object) -> str:
    """``text`` with each of ``addresses`` in it replaced by its masked form."""
    for address in sorted({str(a) for a in addresses if a}, key=len, reverse=True):
        if len(address) > SHOWN:
            text = text.replace(address, mask_address(address))
    return text


def mask_digits(text: str) -> str:
    """``text`` with every run of five or more digits (a phone number, a wa_id)
    masked like an address: ``sandbox:15551234567`` becomes ``sandbox:***4567``."""
    return _NUMBER.sub(lambda found: mask_address(found[0]), text)
