"""operator inbox: operators and their sessions, sign-in failures, notes, reads,
the activity feed and alerts about queued conversations, and conversations
indexed by owner

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "operators",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "name", sa.String(length=64), nullable=False, comment="sign-in name; the assignee of their conversations"
        ),
        sa.Column("password_hash", sa.String(length=256), nullable=False, comment="argon2id, with its parameters"),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("disabled_at", sa.Float(), comment="NULL: may sign in"),
        sa.Column("last_assigned_at", sa.Float(), comment="for round-robin assignment"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("name", name="uq_operators_name"),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("token_hash", sa.String(length=64), primary_key=True, comment="SHA-256 of the cookie's token, hex"),
        sa.Column("operator_id", big_id, sa.ForeignKey("operators.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), comment="where the sign-in came from"),
        sa.Column("user_agent", sa.String(length=256)),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("live_at", sa.Float(), comment="when its page's socket last said it is open"),
    )
    op.create_index("ix_operator_sessions_operator", "operator_sessions", ["operator_id"])
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(length=200), primary_key=True, comment="account:<name> or address:<ip>"),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.Float(), nullable=False),
        sa.Column("last_failed_at", sa.Float(), nullable=False),
        sa.Column("locked_until", sa.Float()),
    )
    op.create_table(
        "conversation_notes",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", big_id, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False, comment="operator:<name>, api, ..."),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_conversation_notes_conversation", "conversation_notes", ["conversation_id", "id"])
    op.create_table(
        "conversation_reads",
        sa.Column("operator_id", big_id, sa.ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("conversation_id", big_id, sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("message_id", sa.BigInteger(), nullable=False, comment="the last message the operator has seen"),
    )
    op.create_table(
        "activity",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", big_id, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="message, status, owner, note, contact"),
        sa.Column("ref_id", sa.BigInteger(), comment="the message, conversation event or note it is about"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_activity_created", "activity", ["created_at"])
    op.create_table(
        "queue_alerts",
        sa.Column(
            "event_id",
            big_id,
            sa.ForeignKey("conversation_events.id", ondelete="CASCADE"),
            primary_key=True,
            comment="the hand-off that waited too long",
        ),
        sa.Column("sent_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_conversations_owner", "conversations", ["owner", "assignee"])
    op.create_index("ix_conversations_owner_updated", "conversations", ["owner", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_owner_updated", table_name="conversations")
    op.drop_index("ix_conversations_owner", table_name="conversations")
    op.drop_table("queue_alerts")
    op.drop_index("ix_activity_created", table_name="activity")
    op.drop_table("activity")
    op.drop_table("conversation_reads")
    op.drop_index("ix_conversation_notes_conversation", table_name="conversation_notes")
    op.drop_table("conversation_notes")
    op.drop_table("sign_in_failures")
    op.drop_index("ix_operator_sessions_operator", table_name="operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
