"""Table definitions (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are unix seconds (double precision) so both databases compare and sort
them the same way. Alembic migrations in ``core/migrations`` create these
tables; a test checks that the migrated database matches this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa

from wahub.core.models import InboxState

metadata = sa.MetaData()

# 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("address", sa.String(128), nullable=False, comment="where replies go: wa_id, phone or BSUID"),
    sa.Column("name", sa.String(256)),
    sa.Column("timezone", sa.String(64), comment="IANA name, for quiet hours; NULL: the configured default"),
    sa.Column("language", sa.String(35), comment="BCP 47; NULL: not known yet (the configured default applies)"),
    sa.Column("language_source", sa.String(16), comment="set (by the API or an operator) or detected"),
    sa.Column("tags", sa.JSON, comment="a list of short labels"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "address", name="uq_contacts_provider_address"),
)

contact_identities = sa.Table(
    "contact_identities",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, comment="phone, wa_id, bsuid, username, crm:<name>"),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("contact_id", "kind", "value", name="uq_identities_contact_kind_value"),
    sa.Index("ix_identities_kind_value", "kind", "value"),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(16), nullable=False, server_default="bot", comment="bot, queued, assigned, phone"),
    sa.Column("assignee", sa.String(128)),
    sa.Column("owner_version", sa.Integer, nullable=False, server_default="0", comment="counts owner changes"),
    sa.Column("owner_changed_at", sa.Float),
    sa.Column("last_human_at", sa.Float, comment="when a person (operator, API, business app) last wrote"),
    sa.Column("answered_through", sa.BigInteger, comment="the last inbound message a bot turn or a person covered"),
    sa.Column("last_inbound_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "contact_id", name="uq_conversations_provider_contact"),
    # The inbox lists conversations by owner, counts each operator's, and looks for queued ones waiting.
    sa.Index("ix_conversations_owner", "owner", "assignee"),
    sa.Index("ix_conversations_owner_updated", "owner", "updated_at"),
)

conversation_events = sa.Table(
    "conversation_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("change", sa.String(16), nullable=False, comment="queued, assigned, released, resolved, phone"),
    sa.Column("from_owner", sa.String(16), nullable=False),
    sa.Column("to_owner", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False, comment="rule, ai:<name>, api, operator:<name>, phone, system"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("assignee", sa.String(128)),
    sa.Column("event_key", sa.String(256), comment="unique per cause, so a re-run records it once"),
    sa.Column("occurred_at", sa.Float, nullable=False),
    sa.UniqueConstraint("event_key", name="uq_conversation_events_event_key"),
    sa.Index("ix_conversation_events_conversation", "conversation_id", "id"),
)

# -- notifications and reminders ----------------------------------------------

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("template", sa.String(512), comment="the template's name; NULL: ``message`` is sent"),
    sa.Column("language", sa.String(16), comment="NULL: each recipient's language, with fallbacks"),
    sa.Column("message", sa.JSON, comment="a canonical message body (free text: only where the window is open)"),
    sa.Column("audience", sa.JSON, nullable=False, comment='{"to": [addresses]} or {"segment": {"tags": [...]}}'),
    sa.Column("parameters", sa.JSON, comment="the template's parameters for everyone"),
    sa.Column("per_recipient", sa.JSON, comment="address -> parameters, over the shared ones"),
    sa.Column("source", sa.String(128), nullable=False, comment="api, cli, reminder:<name>"),
    sa.Column("idempotency_key", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, comment="scheduled, expanding, queued, cancelled"),
    sa.Column("send_at", sa.Float, comment="not before this time; NULL: now"),
    sa.Column("position", sa.BigInteger, nullable=False, server_default="0", comment="recipients written so far"),
    sa.Column("recipients", sa.Integer, nullable=False, server_default="0", comment="counted when it was created"),
    sa.Column("refused", sa.JSON, nullable=False, comment="reason -> recipients refused while expanding"),
    sa.Column("lease_until", sa.Float, comment="a replica is expanding it until then"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("expanded_at", sa.Float, comment="when every recipient's message was written"),
    sa.Column("cancelled_at", sa.Float),
    sa.UniqueConstraint("idempotency_key", name="uq_campaigns_idempotency_key"),
    sa.Index("ix_campaigns_state", "state", "send_at"),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(256), nullable=False, comment="config:<name>[@<zone>] or api:<id>"),
    sa.Column("source", sa.String(16), nullable=False, comment="config or api"),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("cron", sa.String(128), comment="five fields; NULL: fires once at next_fire_at"),
    sa.Column("timezone", sa.String(64), comment="IANA zone the cron is read in"),
    sa.Column("template", sa.String(512), comment="the template to send, or NULL for a message"),
    sa.Column("language", sa.String(16)),
    sa.Column("message", sa.JSON, comment="a canonical message body (free text: only inside the window)"),
    sa.Column("parameters", sa.JSON),
    sa.Column("audience", sa.JSON, nullable=False),
    sa.Column("event_at", sa.Float, comment="an appointment reminder's event"),
    sa.Column("misfire_grace", sa.Float, nullable=False, comment="seconds late a firing may still go"),
    sa.Column("next_fire_at", sa.Float, comment="NULL: nothing left to fire"),
    sa.Column("last_fired_at", sa.Float),
    sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False, comment="active, done, cancelled"),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("name", name="uq_schedules_name"),
    sa.UniqueConstraint("idempotency_key", name="uq_schedules_idempotency_key"),
    sa.Index("ix_schedules_due", "state", "next_fire_at"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False, comment="in or out"),
    sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="SET NULL")),
    sa.Column("address", sa.String(128), nullable=False, comment="the user's address"),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("body", sa.JSON, nullable=False, comment="canonical Cloud-API-shaped message"),
    sa.Column("provider_message_id", sa.String(256)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_reason", sa.Text),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("origin", sa.String(8), comment="out: reply, business or phone; quiet hours hold only business messages"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("lease_until", sa.Float),
    sa.Column(
        "lane", sa.SmallInteger, nullable=False, server_default="0", comment="0: conversation, 1: bulk (after lane 0)"
    ),
    sa.Column("campaign_id", BigId, sa.ForeignKey("campaigns.id", ondelete="SET NULL")),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("idempotency_key", name="uq_messages_idempotency_key"),
    sa.UniqueConstraint("provider", "provider_message_id", name="uq_messages_provider_message_id"),
    sa.Index("ix_messages_outbox", "status", "next_attempt_at"),
    sa.Index("ix_messages_outbox_lane", "status", "lane", "next_attempt_at"),
    sa.Index("ix_messages_conversation", "conversation_id", "id"),
    sa.Index("ix_messages_campaign", "campaign_id", "status"),
)

status_events = sa.Table(
    "status_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("provider_message_id", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_title", sa.Text),
    sa.Column("pricing_category", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "provider_message_id", "status", name="uq_status_events_message_status"),
)

consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("address", sa.String(128), nullable=False),
    sa.Column("action", sa.String(8), nullable=False, comment="opt_in or opt_out"),
    sa.Column("scope", sa.String(16), nullable=False, comment="all, or marketing"),
    sa.Column("source", sa.String(32), nullable=False, comment="keyword, api, provider_preference, ..."),
    sa.Column("evidence", sa.JSON, nullable=False, comment="what proves it: message id and text, API token, ..."),
    sa.Column("event_key", sa.String(256), comment="unique per source event, so a re-run records it once"),
    sa.Column("occurred_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("event_key", name="uq_consent_events_event_key"),
    sa.Index("ix_consent_events_contact", "provider", "address", "occurred_at"),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("category", sa.String(32), nullable=False, comment="MARKETING, UTILITY or AUTHENTICATION"),
    sa.Column("status", sa.String(32), nullable=False, comment="APPROVED, PAUSED, REJECTED, ..."),
    sa.Column("external_id", sa.String(64)),
    sa.Column("components", sa.JSON),
    sa.Column("quality", sa.String(16), comment="GREEN, YELLOW, RED or UNKNOWN, as the provider rates it"),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "name", "language", name="uq_templates_provider_name_language"),
)

media = sa.Table(
    "media",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True, comment="random; the authenticated URL names it"),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False, comment="in: a user sent it; out: uploaded to send"),
    sa.Column("provider_media_id", sa.String(256), comment="the provider's id of an inbound file"),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("mime_type", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.String(256)),
    sa.Column("path", sa.String(512), nullable=False, comment="relative to the media directory"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "provider_media_id", name="uq_media_provider_media_id"),
)

media_uploads = sa.Table(
    "media_uploads",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("mime_type", sa.String(128), nullable=False),
    sa.Column("provider_media_id", sa.String(256), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, comment="after this the provider has forgotten the id"),
    sa.UniqueConstraint("provider", "sha256", "mime_type", name="uq_media_uploads_provider_sha256_type"),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("contact_key", sa.String(256), nullable=False, comment="rows of one key run in order"),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default=InboxState.PENDING.value),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_until", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("processed_at", sa.Float),
    sa.UniqueConstraint("provider", "external_id", name="uq_inbox_provider_external_id"),
    # Claims walk the contacts with pending rows and take each one's oldest
    # (one seek per contact); counts and purges by state use its prefix.
    sa.Index("ix_inbox_state_contact_id", "state", "contact_key", "id"),
    # The users' messages still pending, which claims take first: a small
    # index, as they leave it once claimed, however many statuses wait.
    sa.Index(
        "ix_inbox_pending_messages",
        "contact_key",
        "id",
        sqlite_where=sa.text("state = 'pending' AND kind = 'message'"),
        postgresql_where=sa.text("state = 'pending' AND kind = 'message'"),
    ),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

# -- the operator inbox ------------------------------------------------------

operators = sa.Table(
    "operators",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, comment="sign-in name; the assignee of their conversations"),
    sa.Column("password_hash", sa.String(256), nullable=False, comment="argon2id, with its parameters"),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled_at", sa.Float, comment="NULL: may sign in"),
    sa.Column("last_assigned_at", sa.Float, comment="for round-robin assignment"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("name", name="uq_operators_name"),
)

operator_sessions = sa.Table(
    "operator_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True, comment="SHA-256 of the cookie's token, hex"),
    sa.Column("operator_id", BigId, sa.ForeignKey("operators.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("address", sa.String(64), comment="where the sign-in came from"),
    sa.Column("user_agent", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("live_at", sa.Float, comment="when its page's socket last said it is open"),
    sa.Index("ix_operator_sessions_operator", "operator_id"),
)

sign_in_failures = sa.Table(
    "sign_in_failures",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True, comment="account:<name> or address:<ip>"),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_failed_at", sa.Float, nullable=False),
    sa.Column("last_failed_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float),
)

conversation_notes = sa.Table(
    "conversation_notes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("author", sa.String(128), nullable=False, comment="operator:<name>, api, ..."),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_conversation_notes_conversation", "conversation_id", "id"),
)

conversation_reads = sa.Table(
    "conversation_reads",
    metadata,
    sa.Column("operator_id", BigId, sa.ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("message_id", sa.BigInteger, nullable=False, comment="the last message the operator has seen"),
)

activity = sa.Table(
    "activity",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, comment="message, status, owner, note, contact"),
    sa.Column("ref_id", sa.BigInteger, comment="the message, conversation event or note it is about"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_activity_created", "created_at"),
    # Never an id again after a prune emptied the table: a reader's old cursor stays behind.
    sqlite_autoincrement=True,
)

queue_alerts = sa.Table(
    "queue_alerts",
    metadata,
    sa.Column(
        "event_id",
        BigId,
        sa.ForeignKey("conversation_events.id", ondelete="CASCADE"),
        primary_key=True,
        comment="the hand-off that waited too long",
    ),
    sa.Column("sent_at", sa.Float, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("endpoint", sa.String(64), nullable=False, comment="the crm: entry it goes to"),
    sa.Column("event_id", sa.String(40), nullable=False, comment="evt_...: the same for every endpoint and attempt"),
    sa.Column("type", sa.String(40), nullable=False, comment="message.received, conversation.queued..."),
    sa.Column("contact_id", sa.BigInteger, comment="deliveries of one contact go in id order; NULL: none"),
    sa.Column("payload", sa.JSON, nullable=False, comment='{"type", "timestamp", "data"}'),
    sa.Column("state", sa.String(16), nullable=False, comment="pending, delivered, failed"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, comment="when a pending delivery is due"),
    sa.Column("lease_until", sa.Float, comment="a replica is delivering it until then"),
    sa.Column("last_status", sa.Integer, comment="the endpoint's last HTTP status, if it answered"),
    sa.Column("last_error", sa.Text, comment="why the last attempt failed"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("first_failed_at", sa.Float),
    sa.Column("finished_at", sa.Float, comment="delivered or given up"),
    sa.UniqueConstraint("endpoint", "event_id", name="uq_deliveries_endpoint_event"),
    sa.Index("ix_deliveries_due", "endpoint", "state", "next_attempt_at"),
    sa.Index("ix_deliveries_contact", "endpoint", "contact_id", "state", "id"),
    sa.Index("ix_deliveries_finished", "state", "finished_at"),
)

delivery_endpoints = sa.Table(
    "delivery_endpoints",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True, comment="a crm: entry"),
    sa.Column("disabled_at", sa.Float, comment="NULL: enabled"),
    sa.Column("disabled_reason", sa.Text),
)

crm_links = sa.Table(
    "crm_links",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("backend", sa.String(64), nullable=False, comment="the crm: entry"),
    sa.Column("kind", sa.String(32), nullable=False, comment="what is linked: contact, ticket, conversation..."),
    sa.Column("local_id", sa.String(64), nullable=False, comment="wahub's id of it"),
    sa.Column("remote_id", sa.String(128), nullable=False, comment="the other system's id"),
    sa.Column("data", sa.JSON, comment="whatever else the backend keeps with the link"),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("backend", "kind", "local_id", name="uq_crm_links_local"),
    sa.Index("ix_crm_links_remote", "backend", "kind", "remote_id"),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False, comment="e.g. a key every replica signs with"),
)
