"""notifications and reminders: campaigns (one per notification, expanded in
batches), schedules (reminders, the truth of what fires when), and each
message's lane (replies before bulk) and campaign

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "campaigns",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=512), comment="the template's name; NULL: ``message`` is sent"),
        sa.Column("language", sa.String(length=16), comment="NULL: each recipient's language, with fallbacks"),
        sa.Column("message", sa.JSON(), comment="a canonical message body (free text: only where the window is open)"),
        sa.Column("audience", sa.JSON(), nullable=False, comment='{"to": [addresses]} or {"segment": {"tags": [...]}}'),
        sa.Column("parameters", sa.JSON(), comment="the template's parameters for everyone"),
        sa.Column("per_recipient", sa.JSON(), comment="address -> parameters, over the shared ones"),
        sa.Column("source", sa.String(length=128), nullable=False, comment="api, cli, reminder:<name>"),
        sa.Column("idempotency_key", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False, comment="scheduled, expanding, queued, cancelled"),
        sa.Column("send_at", sa.Float(), comment="not before this time; NULL: now"),
        sa.Column("position", sa.BigInteger(), nullable=False, server_default="0", comment="recipients written so far"),
        sa.Column(
            "recipients", sa.Integer(), nullable=False, server_default="0", comment="counted when it was created"
        ),
        sa.Column("refused", sa.JSON(), nullable=False, comment="reason -> recipients refused while expanding"),
        sa.Column("lease_until", sa.Float(), comment="a replica is expanding it until then"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("expanded_at", sa.Float(), comment="when every recipient's message was written"),
        sa.Column("cancelled_at", sa.Float()),
        sa.UniqueConstraint("idempotency_key", name="uq_campaigns_idempotency_key"),
    )
    op.create_index("ix_campaigns_state", "campaigns", ["state", "send_at"])
    op.create_table(
        "schedules",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=256), nullable=False, comment="config:<name>[@<zone>] or api:<id>"),
        sa.Column("source", sa.String(length=16), nullable=False, comment="config or api"),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=128), comment="five fields; NULL: fires once at next_fire_at"),
        sa.Column("timezone", sa.String(length=64), comment="IANA zone the cron is read in"),
        sa.Column("template", sa.String(length=512), comment="the template to send, or NULL for a message"),
        sa.Column("language", sa.String(length=16)),
        sa.Column("message", sa.JSON(), comment="a canonical message body (free text: only inside the window)"),
        sa.Column("parameters", sa.JSON()),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("event_at", sa.Float(), comment="an appointment reminder's event"),
        sa.Column("misfire_grace", sa.Float(), nullable=False, comment="seconds late a firing may still go"),
        sa.Column("next_fire_at", sa.Float(), comment="NULL: nothing left to fire"),
        sa.Column("last_fired_at", sa.Float()),
        sa.Column("fired", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("state", sa.String(length=16), nullable=False, comment="active, done, cancelled"),
        sa.Column("idempotency_key", sa.String(length=256)),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
        sa.UniqueConstraint("idempotency_key", name="uq_schedules_idempotency_key"),
    )
    op.create_index("ix_schedules_due", "schedules", ["state", "next_fire_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column(
                "lane",
                sa.SmallInteger(),
                nullable=False,
                server_default="0",
                comment="0: conversation, 1: bulk (after lane 0)",
            )
        )
        batch.add_column(sa.Column("campaign_id", big_id, nullable=True))
        batch.create_foreign_key(
            "fk_messages_campaign_id_campaigns", "campaigns", ["campaign_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_messages_outbox_lane", ["status", "lane", "next_attempt_at"])
        batch.create_index("ix_messages_campaign", ["campaign_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_campaign")
        batch.drop_index("ix_messages_outbox_lane")
        batch.drop_constraint("fk_messages_campaign_id_campaigns", type_="foreignkey")
        batch.drop_column("campaign_id")
        batch.drop_column("lane")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
    op.drop_index("ix_campaigns_state", table_name="campaigns")
    op.drop_table("campaigns")
