"""conversations: owners with their history, contacts' languages and tags

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column(
                "language", sa.String(length=35), comment="BCP 47; NULL: not known yet (the configured default applies)"
            )
        )
        batch.add_column(
            sa.Column("language_source", sa.String(length=16), comment="set (by the API or an operator) or detected")
        )
        batch.add_column(sa.Column("tags", sa.JSON(), comment="a list of short labels"))
    # Column comments exist on PostgreSQL only; on SQLite changing one would
    # rebuild the table, and dropping the old one would empty every message's
    # conversation_id (ON DELETE SET NULL).
    comments = op.get_bind().dialect.name != "sqlite"
    with op.batch_alter_table("conversations") as batch:
        if comments:
            batch.alter_column("owner", existing_type=sa.String(length=16), comment="bot, queued, assigned, phone")
        batch.add_column(
            sa.Column("owner_version", sa.Integer(), nullable=False, server_default="0", comment="counts owner changes")
        )
        batch.add_column(sa.Column("owner_changed_at", sa.Float()))
        batch.add_column(
            sa.Column("last_human_at", sa.Float(), comment="when a person (operator, API, business app) last wrote")
        )
        batch.add_column(
            sa.Column(
                "answered_through",
                sa.BigInteger(),
                comment="the last inbound message a bot turn or a person covered",
            )
        )
    if comments:
        op.alter_column(
            "messages",
            "origin",
            existing_type=sa.String(length=8),
            comment="out: reply, business or phone; quiet hours hold only business messages",
        )
    # What was received before conversations had turns has been answered: a
    # first turn after the upgrade covers only what arrives from now on.
    op.execute(
        "UPDATE conversations SET answered_through = (SELECT MAX(m.id) FROM messages m "
        "WHERE m.conversation_id = conversations.id AND m.direction = 'in')"
    )
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "conversation_events",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", big_id, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "change", sa.String(length=16), nullable=False, comment="queued, assigned, released, resolved, phone"
        ),
        sa.Column("from_owner", sa.String(length=16), nullable=False),
        sa.Column("to_owner", sa.String(length=16), nullable=False),
        sa.Column(
            "actor",
            sa.String(length=128),
            nullable=False,
            comment="rule, ai:<name>, api, operator:<name>, phone, system",
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("assignee", sa.String(length=128)),
        sa.Column("event_key", sa.String(length=256), comment="unique per cause, so a re-run records it once"),
        sa.Column("occurred_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("event_key", name="uq_conversation_events_event_key"),
    )
    op.create_index("ix_conversation_events_conversation", "conversation_events", ["conversation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_events_conversation", table_name="conversation_events")
    op.drop_table("conversation_events")
    with op.batch_alter_table("conversations") as batch:
        for column in ("answered_through", "last_human_at", "owner_changed_at", "owner_version"):
            batch.drop_column(column)
    with op.batch_alter_table("contacts") as batch:
        for column in ("tags", "language_source", "language"):
            batch.drop_column(column)
