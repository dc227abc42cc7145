"""The ``inbox:`` section of the configuration."""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from wahub.core.config.validators import localized_text, number_between, proxy_network

#: Longest canned reply, as WhatsApp's text limit.
MAX_CANNED = 4096


def _origin(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or value.count("/") != 2:
        raise vol.Invalid("expected an origin: scheme and host, e.g. https://inbox.example.com (no path)")
    return value.rstrip("/").lower()


def _apprise_url(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise vol.Invalid("expected an Apprise URL, e.g. mailto://user:password@example.com or tgram://token/chat")
    return value


INBOX_SCHEMA = vol.Schema(
    {
        # Off: no /inbox routes at all.
        vol.Optional("enabled", default=True): bool,
        # A session ends after this long without use, and after session_days in any case.
        vol.Optional("session_idle_hours", default=12): number_between(0.1, 24 * 30),
        vol.Optional("session_days", default=7): number_between(0.1, 365),
        # Other origins the page is served from (behind a proxy that changes the Host header).
        vol.Optional("origins", default=list): [_origin],
        # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For and
        # X-Forwarded-Proto are believed; from any other peer they are ignored.
        vol.Optional("trusted_proxies", default=list): [proxy_network],
        # auto: the cookies are Secure when the request came over HTTPS; always:
        # Secure in any case (behind a TLS proxy that sends no X-Forwarded-Proto).
        vol.Optional("secure_cookies", default="auto"): vol.In(["auto", "always"], msg="expected auto or always"),
        vol.Optional("sign_in", default=dict): {
            # After this many failures under one account or address each attempt waits longer...
            vol.Optional("slow_after", default=3): vol.All(int, vol.Range(min=1, max=100)),
            # ...and at this many the account is locked for lock_minutes.
            vol.Optional("lock_after", default=10): vol.All(int, vol.Range(min=1, max=1000)),
            # Failures from one address, over every account, that lock the address.
            vol.Optional("address_lock_after", default=50): vol.All(int, vol.Range(min=1, max=100000)),
            vol.Optional("lock_minutes", default=15): number_between(1, 24 * 60),
        },
        # Ready answers the composer offers, each a text or a text per language.
        vol.Optional("canned_replies", default=list): [
            {
                vol.Required("title"): vol.All(str, vol.Length(min=1, max=60)),
                vol.Required("text"): localized_text(MAX_CANNED),
            }
        ],
        # Give each newly queued conversation to an operator whose page is open, in turn.
        vol.Optional("auto_assign", default=False): bool,
        # No operator is given more open conversations than this automatically.
        vol.Optional("max_open_per_operator", default=10): vol.All(int, vol.Range(min=1, max=10000)),
        # Apprise URLs told when a conversation waits in the queue for notify_after minutes.
        vol.Optional("notify", default=list): [_apprise_url],
        vol.Optional("notify_after", default=5): number_between(0, 7 * 24 * 60),
    },
    extra=vol.PREVENT_EXTRA,
)
