"""Bird's webhook signature (Notifications API subscriptions).

Bird signs each webhook with the subscription's signing key:
``messagebird-signature`` is the base64 of HMAC-SHA256 over the
``messagebird-request-timestamp`` value, a newline, the full URL Bird called,
a newline and the raw SHA-256 digest (32 bytes, not hex) of the body. A
timestamp more than ``TOLERANCE`` seconds away from now, either way, is
refused, so a captured webhook cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping

SIGNATURE_HEADER = "messagebird-signature"
TIMESTAMP_HEADER = "messagebird-request-timestamp"
#: How far (seconds) a webhook's timestamp may be from now, before or after.
TOLERANCE = 300.0


def signed_bytes(timestamp: str, url: str, body: bytes) -> bytes:
    """What Bird's HMAC covers: ``timestamp\\nurl\\n`` and the body's raw SHA-256 digest."""
    return f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()


def compute_signature(signing_key: str, timestamp: str, url: str, body: bytes) -> str:
    """The ``messagebird-signature`` value Bird sends for ``body`` posted to ``url`` at ``timestamp``."""
    digest = hmac.new(signing_key.encode(), signed_bytes(timestamp, url, body), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_headers(signing_key: str, url: str, body: bytes, *, now: float) -> dict[str, str]:
    """Both headers of a webhook signed as Bird signs it, at unix time ``now``."""
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: compute_signature(signing_key, timestamp, url, body)}


def signature_valid(signing_key: str, headers: Mapping[str, str], url: str, body: bytes, *, now: float) -> bool:
    """Whether the headers sign ``body`` posted to ``url`` with ``signing_key``
    and their timestamp is within ``TOLERANCE`` of ``now``; compared in constant time."""
    timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    given = headers.get(SIGNATURE_HEADER, "").strip()
    if not timestamp.isascii() or not timestamp.isdigit() or not given:
        return False
    sent_at = float(timestamp)
    if not math.isfinite(sent_at) or abs(now - sent_at) > TOLERANCE:
        return False
    try:
        decoded = base64.b64decode(given.encode("ascii"), validate=True)
        signed = signed_bytes(timestamp, url, body)
    except (UnicodeEncodeError, binascii.Error, ValueError):  # not base64, or a URL that is not text
        return False
    expected = hmac.new(signing_key.encode(), signed, hashlib.sha256).digest()
    return hmac.compare_digest(decoded, expected)
