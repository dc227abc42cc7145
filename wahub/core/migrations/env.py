"""Alembic environment: wahub runs migrations itself at start-up, on the
connection it hands over in ``config.attributes["connection"]``."""

from alembic import context

from wahub.core.storage_schema import metadata

connection = context.config.attributes["connection"]
# render_as_batch lets later migrations alter columns on SQLite too.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
