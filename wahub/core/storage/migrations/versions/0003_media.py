"""media: stored inbound files and the provider ids of uploaded ones; template quality

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(
            sa.Column(
                "quality",
                sa.String(length=16),
                nullable=True,
                comment="GREEN, YELLOW, RED or UNKNOWN, as the provider rates it",
            )
        )
    op.create_table(
        "media",
        sa.Column("id", sa.String(length=32), nullable=False, comment="random; the authenticated URL names it"),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column(
            "direction", sa.String(length=3), nullable=False, comment="in: a user sent it; out: uploaded to send"
        ),
        sa.Column(
            "provider_media_id", sa.String(length=256), nullable=True, comment="the provider's id of an inbound file"
        ),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("mime_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=256), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=False, comment="relative to the media directory"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_media_id", name="uq_media_provider_media_id"),
    )
    op.create_table(
        "media_uploads",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("mime_type", sa.String(length=128), nullable=False),
        sa.Column("provider_media_id", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False, comment="after this the provider has forgotten the id"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "sha256", "mime_type", name="uq_media_uploads_provider_sha256_type"),
    )


def downgrade() -> None:
    op.drop_table("media_uploads")
    op.drop_table("media")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("quality")
