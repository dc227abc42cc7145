"""settings: values every replica shares, such as the key that signs the
public URLs of files handed to providers that fetch media by URL

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False, comment="e.g. a key every replica signs with"),
    )


def downgrade() -> None:
    op.drop_table("settings")
