"""integrations: deliveries (every event for each crm: entry, written with the
change that caused it), delivery endpoints (disabled by a 410), and the links
between wahub's records and a CRM's

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "deliveries",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(length=64), nullable=False, comment="the crm: entry it goes to"),
        sa.Column(
            "event_id",
            sa.String(length=40),
            nullable=False,
            comment="evt_...: the same for every endpoint and attempt",
        ),
        sa.Column("type", sa.String(length=40), nullable=False, comment="message.received, conversation.queued..."),
        sa.Column("contact_id", sa.BigInteger(), comment="deliveries of one contact go in id order; NULL: none"),
        sa.Column("payload", sa.JSON(), nullable=False, comment='{"type", "timestamp", "data"}'),
        sa.Column("state", sa.String(length=16), nullable=False, comment="pending, delivered, failed"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float(), comment="when a pending delivery is due"),
        sa.Column("lease_until", sa.Float(), comment="a replica is delivering it until then"),
        sa.Column("last_status", sa.Integer(), comment="the endpoint's last HTTP status, if it answered"),
        sa.Column("last_error", sa.Text(), comment="why the last attempt failed"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("first_failed_at", sa.Float()),
        sa.Column("finished_at", sa.Float(), comment="delivered or given up"),
        sa.UniqueConstraint("endpoint", "event_id", name="uq_deliveries_endpoint_event"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["endpoint", "state", "next_attempt_at"])
    op.create_index("ix_deliveries_contact", "deliveries", ["endpoint", "contact_id", "state", "id"])
    op.create_index("ix_deliveries_finished", "deliveries", ["state", "finished_at"])
    op.create_table(
        "delivery_endpoints",
        sa.Column("name", sa.String(length=64), primary_key=True, comment="a crm: entry"),
        sa.Column("disabled_at", sa.Float(), comment="NULL: enabled"),
        sa.Column("disabled_reason", sa.Text()),
    )
    op.create_table(
        "crm_links",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("backend", sa.String(length=64), nullable=False, comment="the crm: entry"),
        sa.Column(
            "kind", sa.String(length=32), nullable=False, comment="what is linked: contact, ticket, conversation..."
        ),
        sa.Column("local_id", sa.String(length=64), nullable=False, comment="wahub's id of it"),
        sa.Column("remote_id", sa.String(length=128), nullable=False, comment="the other system's id"),
        sa.Column("data", sa.JSON(), comment="whatever else the backend keeps with the link"),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("backend", "kind", "local_id", name="uq_crm_links_local"),
    )
    op.create_index("ix_crm_links_remote", "crm_links", ["backend", "kind", "remote_id"])


def downgrade() -> None:
    op.drop_table("crm_links")
    op.drop_table("delivery_endpoints")
    op.drop_index("ix_deliveries_finished", table_name="deliveries")
    op.drop_index("ix_deliveries_contact", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
