"""policy: consent ledger, templates, contact time zones

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column(
                "timezone",
                sa.String(length=64),
                nullable=True,
                comment="IANA name, for quiet hours; NULL: the configured default",
            )
        )
    op.create_table(
        "consent_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False, comment="opt_in or opt_out"),
        sa.Column("scope", sa.String(length=16), nullable=False, comment="all, or marketing"),
        sa.Column("source", sa.String(length=32), nullable=False, comment="keyword, api, provider_preference, ..."),
        sa.Column("evidence", sa.JSON(), nullable=False, comment="what proves it: message id and text, API token, ..."),
        sa.Column(
            "event_key",
            sa.String(length=256),
            nullable=True,
            comment="unique per source event, so a re-run records it once",
        ),
        sa.Column("occurred_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_key", name="uq_consent_events_event_key"),
    )
    op.create_index("ix_consent_events_contact", "consent_events", ["provider", "address", "occurred_at"])
    op.create_table(
        "templates",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False, comment="MARKETING, UTILITY or AUTHENTICATION"),
        sa.Column("status", sa.String(length=32), nullable=False, comment="APPROVED, PAUSED, REJECTED, ..."),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("components", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "name", "language", name="uq_templates_provider_name_language"),
    )


def downgrade() -> None:
    op.drop_table("templates")
    op.drop_index("ix_consent_events_contact", table_name="consent_events")
    op.drop_table("consent_events")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("timezone")
