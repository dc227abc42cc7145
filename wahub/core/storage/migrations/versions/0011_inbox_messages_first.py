"""inbox: an index of the user messages still pending, so that claims take
them before a backlog of delivery statuses

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PENDING_MESSAGE = sa.text("state = 'pending' AND kind = 'message'")


def upgrade() -> None:
    op.create_index(
        "ix_inbox_pending_messages",
        "inbox",
        ["contact_key", "id"],
        sqlite_where=_PENDING_MESSAGE,
        postgresql_where=_PENDING_MESSAGE,
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_pending_messages", table_name="inbox")
