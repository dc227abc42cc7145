"""How an inbox row failed: whether the failure is the row's own (its data, so
another try would fail the same way) or passing, and a failed row as an
operator sees it. The inbox workers (``wahub.core.inbound.worker``) decide with it
how often a row is tried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import sqlalchemy as sa

from wahub.core.errors import Unprocessable
from wahub.core.privacy import mask_digits
from wahub.core.storage.inbox import FailedRow

#: PostgreSQL errors caused by the values sent: every data exception (class 22), a datatype mismatch.
_DATA_SQLSTATES = ("22", "42804")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the row's own data, so that trying again would
    fail the same way: a type or value error (``type 'list' is not supported``
    when a list reaches a text column), or a database refusing the values.
    Time-outs, network and connection failures are passing."""
    for link in _chain(exc):
        if isinstance(link, Unprocessable):
            return True
        if isinstance(link, TimeoutError | OSError | aiohttp.ClientError):
            return False
        if isinstance(link, sa.exc.DBAPIError):
            if link.connection_invalidated or isinstance(link, sa.exc.OperationalError):
                return False
            sqlstate = str(getattr(link.orig, "sqlstate", None) or getattr(link.orig, "pgcode", None) or "")
            if isinstance(link, sa.exc.DataError) or sqlstate.startswith(_DATA_SQLSTATES):
                return True
            if "binding parameter" in str(link.orig):  # SQLite given a value of a type it cannot store
                return True
        elif isinstance(link, TypeError | ValueError | LookupError | AttributeError):
            return True
    return False


def failed_event(row: FailedRow) -> dict[str, Any]:
    """A failed inbox row as an operator sees it (``wahub inbox failed``, the
    REST API): phone numbers in its contact and error cut to their last digits."""
    return {
        "id": row.id,
        "provider": row.provider,
        "kind": row.kind,
        "attempts": row.attempts,
        "error": mask_digits(row.error),
        "contact": mask_digits(row.contact_key),
        "received_at": row.received_at,
        "failed_at": row.failed_at,
    }
