"""Segments: a provider's contacts chosen by their tags (every one listed) and,
optionally, their time zone, found in SQL on SQLite and PostgreSQL alike, so a
rare tag among a million contacts reads only the contacts that have it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from wahub.core.storage.schema import contacts


@dataclass(frozen=True)
class Segment:
    """The contacts of a provider having every tag (and, with ``timezone``,
    living in that zone; those without a zone count as ``default_zone``)."""

    provider: str
    tags: tuple[str, ...]
    timezone: str | None = None
    default_zone: str = "UTC"


def has_every_tag(tags: Sequence[str], dialect: str) -> sa.ColumnElement[bool]:
    """Contacts whose ``tags`` list holds every one of ``tags`` (all contacts when none are given)."""
    if not tags:
        return sa.true()
    if dialect == "postgresql":
        return sa.cast(contacts.c.tags, JSONB).contains(list(tags))
    listed = sa.func.json_each(contacts.c.tags).table_valued("value")
    return sa.and_(*(sa.exists().where(listed.c.value == tag) for tag in dict.fromkeys(tags)))


def segment_filter(segment: Segment, dialect: str) -> sa.ColumnElement[bool]:
    """The SQL condition of ``segment`` on ``contacts`` in the connection's ``dialect``."""
    where = sa.and_(contacts.c.provider == segment.provider, has_every_tag(segment.tags, dialect))
    if segment.timezone is not None:
        zone = contacts.c.timezone == segment.timezone
        if segment.timezone == segment.default_zone:
            zone = sa.or_(zone, contacts.c.timezone.is_(None))
        where = sa.and_(where, zone)
    return where
