"""inbox: index claims by contact, so that one contact's backlog never holds back the others

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
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
