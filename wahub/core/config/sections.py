"""The schemas of the core's own configuration keys read by the storage, policy and HTTP layers.

They live here, below those layers, so that validating a configuration never
imports them: ``wahub.media`` (``MEDIA_SCHEMA``), the limits of
``wahub.http`` (``HTTP_LIMIT_KEYS``) and the ``policy`` section
(``POLICY_SCHEMA``, with ``CONSENT_SCHEMA`` for ``policy.consent``).
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from wahub.core.config.validators import clock_time, int_between, language_code, seconds_between, timezone_name

__all__ = [
    "CONSENT_SCHEMA",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TYPES",
    "HTTP_LIMIT_KEYS",
    "LANGUAGE_SCHEMA",
    "MEDIA_SCHEMA",
    "POLICY_SCHEMA",
]

_MB = 1024 * 1024

#: The Cloud API's limits per kind (reference section 5).
DEFAULT_MAX_BYTES: dict[str, int] = {
    "image": 5 * _MB,
    "video": 16 * _MB,
    "audio": 16 * _MB,
    "document": 100 * _MB,
    "sticker": 500 * 1024,
}
DEFAULT_TYPES: dict[str, list[str]] = {
    "image": ["image/jpeg", "image/png"],
    "video": ["video/mp4", "video/3gpp"],
    "audio": ["audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"],
    "document": ["*"],
    "sticker": ["image/webp"],
}

MEDIA_SCHEMA = vol.Schema(
    {
        vol.Optional("directory", default="data/media"): vol.All(str, vol.Length(min=1)),
        vol.Optional("max_bytes", default=dict): {
            vol.Optional(kind, default=limit): vol.All(int, vol.Range(min=1, max=2**40))
            for kind, limit in DEFAULT_MAX_BYTES.items()
        },
        # MIME types accepted per kind ("*" accepts any); parameters such as "; codecs=opus" are ignored.
        vol.Optional("types", default=dict): {
            vol.Optional(kind, default=types): [vol.All(str, vol.Length(min=1))]
            for kind, types in DEFAULT_TYPES.items()
        },
    }
)

#: The keys of ``wahub.http`` the HTTP server reads (merged into the core schema).
HTTP_LIMIT_KEYS: dict[Any, Any] = {
    vol.Optional("keepalive_timeout", default=75.0): seconds_between(0.05, 86400),
    vol.Optional("read_timeout", default=60.0): seconds_between(0.05, 86400),
    vol.Optional("max_connections", default=500): int_between(1, 1_000_000),
}

_WORDS = vol.All([vol.All(str, vol.Length(min=1, max=64))], vol.Length(min=1))
LANGUAGE_SCHEMA = vol.Schema(
    {
        vol.Required("stop"): _WORDS,
        vol.Required("start"): _WORDS,
        vol.Required("opted_out"): vol.All(str, vol.Length(min=1, max=1024)),
        vol.Required("opted_in"): vol.All(str, vol.Length(min=1, max=1024)),
    }
)
CONSENT_SCHEMA = vol.Schema(
    {
        vol.Optional("keywords", default=True): bool,
        vol.Optional("marketing_requires_opt_in", default=True): bool,
        vol.Optional("languages", default=dict): {language_code: LANGUAGE_SCHEMA},
    }
)

POLICY_SCHEMA = vol.Schema(
    {
        vol.Optional("service_window", default=dict): {
            vol.Optional("fallback_template"): {
                vol.Required("name"): vol.All(str, vol.Length(min=1, max=512)),
                vol.Required("language"): vol.All(str, vol.Length(min=2, max=16)),
            }
        },
        vol.Optional("consent", default=dict): CONSENT_SCHEMA,
        vol.Optional("quiet_hours"): {
            vol.Required("start"): clock_time,
            vol.Required("end"): clock_time,
            vol.Optional("timezone", default="UTC"): timezone_name,
        },
    }
)

#: ``conversations``: how the bot's turns gather messages and when a person's conversation returns to the bot.
CONVERSATIONS_SCHEMA = vol.Schema(
    {
        # Messages a contact sends within this many seconds of each other get one answer.
        vol.Optional("debounce_seconds", default=2.0): seconds_between(0, 60),
        # A conversation a person owns (or was asked for) goes back to the bot after
        # this long without a person writing in it; null: only when resolved.
        vol.Optional("return_to_bot_after", default=12 * 3600): vol.Any(None, seconds_between(60, 90 * 86400)),
    }
)
