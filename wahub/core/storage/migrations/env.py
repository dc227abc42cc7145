"""Alembic environment: wahub runs migrations itself at start-up, on the
connection it hands over in ``config.attributes["connection"]``.

Each migration applied is appended to ``config.attributes["applied"]`` as
``(revision, description)``, so the caller can log them once they committed.
"""

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo

from wahub.core.storage.schema import metadata

connection = context.config.attributes["connection"]
applied: list[tuple[str, str]] = context.config.attributes.setdefault("applied", [])


def _record(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]) -> None:
    # The revision is the migration's Script: its ``doc`` is the docstring's first line.
    description = getattr(step.up_revision, "doc", None) or ""
    applied.append((str(step.up_revision_id), str(description).strip()))


# render_as_batch lets later migrations alter columns on SQLite too.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, on_version_apply=_record)
with context.begin_transaction():
    context.run_migrations()
