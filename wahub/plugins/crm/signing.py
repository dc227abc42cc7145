"""Signed webhooks from helpdesks (Zendesk, Chatwoot): checking a request's
signature and timestamp on its raw body, and reading its JSON once it passed.

Each helpdesk signs ``timestamp`` and ``body`` with a shared secret in its own
way (``SignatureScheme.sign``) and sends both in headers of its own. The
checks are the same for all: both headers present, a timestamp that is a
time (at most ``MAX_TIMESTAMP_CHARS`` characters, so a huge number is a
refusal, never an error) within ``TOLERANCE_SECONDS`` of the real time (the
helpdesk stamps with the real time, whatever clock the daemon runs on), and
the signature compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from wahub.core.errors import BodyRefused
from wahub.core.http.api_io import abort, parse_json

_LOGGER = logging.getLogger(__name__)

#: Seconds a webhook's timestamp may be away from now, either side.
TOLERANCE_SECONDS = 300.0
#: The longest timestamp header read (an ISO 8601 time with a fraction and a zone fits).
MAX_TIMESTAMP_CHARS = 40


def unix_seconds(value: str) -> float | None:
    """A timestamp in whole unix seconds; None if it is not one."""
    value = value.strip()
    if len(value) > MAX_TIMESTAMP_CHARS or not value.isascii() or not value.isdigit():
        return None
    return float(int(value))


def iso_or_unix_seconds(value: str) -> float | None:
    """A timestamp in ISO 8601 (without a zone: UTC) or in unix seconds
    (milliseconds when it is that large), as unix seconds; None if neither."""
    value = value.strip()
    if len(value) > MAX_TIMESTAMP_CHARS:
        return None
    number = unix_seconds(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError):
        return None


@dataclass(frozen=True)
class SignatureScheme:
    """How one helpdesk signs its webhooks: the two headers, the signature
    the header must hold for a secret, timestamp and body, how the timestamp
    is read, and what to check when the signature does not match."""

    signature_header: str
    timestamp_header: str
    sign: Callable[[str, str, bytes], str]
    read_timestamp: Callable[[str], float | None] = unix_seconds
    #: How a received signature is written before comparing (Chatwoot's hex may be upper case).
    normalise: Callable[[str], str] = str.strip
    secret_hint: str = "check the entry's webhook_secret"

    def problem(self, secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str | None:
        """Why ``body`` with ``headers`` is not a webhook signed with ``secret``
        within five minutes of ``now`` (the real time by default), or None when it is."""
        given, stamp = headers.get(self.signature_header), headers.get(self.timestamp_header)
        if not given or not stamp:
            return f"the request is not signed: {self.signature_header} and {self.timestamp_header} are required"
        at = self.read_timestamp(stamp) if len(stamp) <= MAX_TIMESTAMP_CHARS else None
        if at is None:
            return f"{self.timestamp_header} is not a time"
        if abs((time.time() if now is None else now) - at) > TOLERANCE_SECONDS:
            minutes = f"{TOLERANCE_SECONDS / 60:g}"
            return f"{self.timestamp_header} is more than {minutes} minutes from now (a replay, or a clock off)"
        expected = self.sign(secret, stamp, body).encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected, self.normalise(given).encode("utf-8", "surrogateescape")):
            return f"{self.signature_header} does not match the body ({self.secret_hint})"
        return None


async def signed_json(request: web.Request, scheme: SignatureScheme, secret: str, *, entry: str) -> Any:
    """The JSON body of a webhook request to ``entry`` that ``scheme`` says is
    signed with ``secret``. Otherwise nothing is done with it: a request
    without a valid signature raises a 401 (``invalid_signature``), a signed
    body that is not JSON a 400 (``invalid_json``), each in the JSON error
    envelope, naming the problem."""
    raw = await request.read()
    problem = scheme.problem(secret, request.headers, raw)
    if problem is not None:
        _LOGGER.warning("refused a webhook to crm entry %s: %s", entry, problem)
        raise abort(web.HTTPUnauthorized, "invalid_signature", problem)
    try:
        return parse_json(raw)
    except BodyRefused as exc:
        raise abort(web.HTTPBadRequest, "invalid_json", str(exc)) from None
