"""Prometheus metrics, named in WhatsApp terms. One registry per daemon (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.webhook_requests = Counter(
            "wahub_webhook_requests", "Webhook requests by provider and outcome", ["provider", "outcome"], registry=r
        )
        self.webhook_events = Counter(
            "wahub_webhook_events", "Webhook events stored, by provider and kind", ["provider", "kind"], registry=r
        )
        self.deliveries = Counter(
            "wahub_deliveries",
            "Attempts to deliver events to crm: entries, by entry and outcome (delivered, retried, failed, gone)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.webhook_duplicates = Counter(
            "wahub_webhook_duplicate_events", "Redelivered webhook events skipped", registry=r
        )
        self.webhook_latency = Histogram(
            "wahub_webhook_latency_seconds",
            "Time from webhook received to stored and answered",
            ["provider"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.inbox_commit_batch = Histogram(
            "wahub_inbox_commit_batch_size",
            "Webhook requests stored per inbox commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.ownership_changes = Counter(
            "wahub_conversation_owner_changes",
            "Changes of a conversation's owner, by change and by who made it",
            ["change", "actor"],
            registry=r,
        )
        self.bot_turns = Counter(
            "wahub_bot_turns",
            "Bot turns by handler and outcome (answered, handoff, dropped, silent)",
            ["handler", "outcome"],
            registry=r,
        )
        self.inbox_depth = Gauge("wahub_inbox_depth", "Inbox events not yet processed", registry=r)
        self.inbox_oldest_age = Gauge(
            "wahub_inbox_oldest_age_seconds", "Age of the oldest unprocessed event", registry=r
        )
        self.inbox_failed = Gauge(
            "wahub_inbox_failed", "Inbox events that gave up, kept for replay (wahub inbox failed)", registry=r
        )
        self.inbox_processed = Counter(
            "wahub_inbox_processed", "Inbox events processed, by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.sends = Counter(
            "wahub_sends",
            "Send attempts by provider, outcome and error code",
            ["provider", "outcome", "error_code"],
            registry=r,
        )
        self.statuses = Counter(
            "wahub_message_statuses", "Delivery statuses received", ["provider", "status"], registry=r
        )
        self.send_refusals = Counter(
            "wahub_send_refusals",
            "Sends refused before queueing (window_closed, opted_out, invalid_message, ...)",
            ["provider", "reason"],
            registry=r,
        )
        self.consent_changes = Counter(
            "wahub_consent_changes", "Opt-ins and opt-outs recorded", ["provider", "action", "source"], registry=r
        )
        self.outbox_depth = Gauge(
            "wahub_outbox_depth", "Messages queued and not yet sent, by provider", ["provider"], registry=r
        )
        self.outbox_oldest_age = Gauge(
            "wahub_outbox_oldest_age_seconds", "Age of the oldest queued message, by provider", ["provider"], registry=r
        )
        self.provider_ready = Gauge(
            "wahub_provider_ready", "1 when the provider is ready to send", ["provider"], registry=r
        )
        self.provider_quality = Gauge(
            "wahub_provider_quality",
            "1 for the number's current quality (high, medium, low, unknown)",
            ["provider", "rating"],
            registry=r,
        )
        self.provider_messaging_limit = Gauge(
            "wahub_provider_messaging_limit",
            "Users the business may message outside a service window per 24 h (+Inf: unlimited)",
            ["provider"],
            registry=r,
        )

        self.notification_recipients = Counter(
            "wahub_notification_recipients",
            "Recipients of notifications and reminders as they are expanded: queued, or refused with the reason",
            ["provider", "source", "outcome", "reason"],
            registry=r,
        )
        self.notification_messages = Gauge(
            "wahub_notification_messages",
            "Messages of the notifications (and reminder firings) of the last 24 h, by status "
            "(queued, sent, delivered, read, failed) and, for failed ones, the error code",
            ["provider", "status", "reason"],
            registry=r,
        )
        self.reminder_firings = Counter(
            "wahub_reminder_firings",
            "Reminder firings: fired, fired_late (within misfire_grace) or skipped with the reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.messaging_limit_headroom = Gauge(
            "wahub_messaging_limit_headroom",
            "Users the number may still message outside a service window in the rolling 24 h (+Inf: unlimited)",
            ["provider"],
            registry=r,
        )
        self.bulk_throttled = Counter(
            "wahub_bulk_throttled",
            "Times bulk sending slowed down or paused: throughput, pair_rate or messaging_limit",
            ["provider", "why"],
            registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter | Histogram | Gauge, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the webhook path calls it per request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
