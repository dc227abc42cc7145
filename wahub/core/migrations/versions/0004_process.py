"""inbox: index claims by contact, so that one contact's backlog never holds back the others

Revision ID: 0004_process
Revises: 0003
"""

from alembic import op

revision = "0004_process"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.create_index("ix_inbox_state_contact_id", ["state", "contact_key", "id"], unique=False)
        batch.drop_index("ix_inbox_state_id")


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.create_index("ix_inbox_state_id", ["state", "id"], unique=False)
        batch.drop_index("ix_inbox_state_contact_id")
