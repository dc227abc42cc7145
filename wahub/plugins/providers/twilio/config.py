"""The ``providers:`` entry of a Twilio WhatsApp sender (``platform: twilio``)."""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from wahub.core.config.validators import number_between
from wahub.core.provider import PROVIDER_SCHEMA_BASE, PUBLIC_URL_OPTIONS


def _sid(prefix: str, what: str) -> vol.All:
    return vol.All(str, vol.Match(rf"^{prefix}[0-9a-fA-F]{{32}}$", msg=f"expected {what}: {prefix} and 32 hex digits"))


def _one_of_each(entry: dict[str, Any]) -> dict[str, Any]:
    """A sender, credentials to call the API with, and the auth token when webhooks are verified."""
    if not entry.get("from") and not entry.get("messaging_service_sid"):
        raise vol.Invalid(
            "required key 'from' is missing: give the sender as whatsapp:+<E.164 number>, "
            "or its Messaging Service as messaging_service_sid",
            path=["from"],
        )
    for have, need in (("api_key_sid", "api_key_secret"), ("api_key_secret", "api_key_sid")):
        if entry.get(have) and not entry.get(need):
            raise vol.Invalid(f"required key {need!r} is missing: an API key is its SID and its secret", path=[need])
    if not entry.get("auth_token") and not entry.get("api_key_sid"):
        raise vol.Invalid(
            "required key 'auth_token' is missing: give the account's auth token, or an API key "
            "(api_key_sid and api_key_secret)",
            path=["auth_token"],
        )
    if entry["verify_webhooks"] and not entry.get("auth_token"):
        raise vol.Invalid(
            "required key 'auth_token' is missing: Twilio signs webhooks with the account's auth token "
            "even when wahub sends with an API key (set verify_webhooks: false only behind a private network)",
            path=["auth_token"],
        )
    return entry


CONFIG_SCHEMA = vol.Schema(
    vol.All(
        PROVIDER_SCHEMA_BASE.extend(
            {
                # The account's SID (AC...), on the Twilio Console's home page.
                vol.Required("account_sid"): _sid("AC", "an account SID"),
                # The account's auth token: signs every webhook; also sends, unless an API key is given.
                vol.Optional("auth_token"): vol.All(str, vol.Length(min=1)),
                # An API key (SK...) and its secret to send with instead of the auth token.
                vol.Optional("api_key_sid"): _sid("SK", "an API key SID"),
                vol.Optional("api_key_secret"): vol.All(str, vol.Length(min=1)),
                # The WhatsApp sender, whatsapp:+<E.164 number>...
                vol.Exclusive("from", "sender", msg="give from or messaging_service_sid, not both"): vol.All(
                    str, vol.Match(r"^whatsapp:\+[1-9]\d{5,14}$", msg="expected whatsapp:+<E.164 number>")
                ),
                # ... or the Messaging Service (MG...) whose sender pool sends.
                vol.Exclusive("messaging_service_sid", "sender", msg="give from or messaging_service_sid, not both"): (
                    _sid("MG", "a Messaging Service SID")
                ),
                # Check X-Twilio-Signature on every webhook (needs auth_token).
                vol.Optional("verify_webhooks", default=True): bool,
                # Seconds a call to Twilio may take.
                vol.Optional("timeout", default=30.0): number_between(0.1, 300),
                # Where the Messages API and the Content API are (changed only by tests).
                vol.Optional("api_base", default="https://api.twilio.com"): vol.Url(),
                vol.Optional("content_base", default="https://content.twilio.com"): vol.Url(),
                # public_base_url (status callbacks, files wahub serves) and trusted_proxies.
                **PUBLIC_URL_OPTIONS,
            }
        ),
        _one_of_each,
    )
)
