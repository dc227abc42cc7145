"""messages.origin: replies and business-initiated messages told apart at dispatch

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column(
                "origin",
                sa.String(length=8),
                nullable=True,
                comment="out: reply or business; quiet hours hold only business messages",
            )
        )
    # Until now only the pipeline queued replies, each under a "reply:" key.
    op.execute(
        "UPDATE messages SET origin = CASE WHEN idempotency_key LIKE 'reply:%' THEN 'reply' ELSE 'business' END "
        "WHERE direction = 'out'"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("origin")
