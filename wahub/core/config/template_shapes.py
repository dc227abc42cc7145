"""The shapes of a template file of the templates directory (``wahub.core.config.templates``):
Meta's limits and the voluptuous schemas of the file, its components and buttons."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import voluptuous as vol

from wahub.core.config.validators import ExplainedInvalid

CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
PARAMETER_FORMATS = ("positional", "named")
HEADER_FORMATS = ("TEXT", "IMAGE", "VIDEO", "DOCUMENT", "LOCATION")
MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")
COMPONENT_TYPES = ("HEADER", "BODY", "FOOTER", "BUTTONS")
BUTTON_TYPES = ("QUICK_REPLY", "URL", "PHONE_NUMBER", "COPY_CODE", "OTP", "FLOW")
#: Meta's limits on a template (reference section 4).
MAX_NAME = 512
MAX_HEADER_TEXT = 60
MAX_BODY_TEXT = 1024
MAX_FOOTER_TEXT = 60
MAX_BUTTON_LABEL = 25
MAX_URL = 2000
MAX_COPY_CODE = 15
MAX_BUTTONS = 10
#: At most this many buttons of a kind in one template.
BUTTON_LIMITS = {"URL": 2, "PHONE_NUMBER": 1, "COPY_CODE": 1}

NAME_PATTERN = re.compile(r"[a-z0-9_]+")
#: Meta's template languages: a language, then an optional region (en, en_US, pt_BR, zh_HK).
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")


def _example_text(value: Any) -> str:
    """An example value: a text (a number written unquoted is taken as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise vol.Invalid("expected a text")
    return str(value)


def _one_of(choices: tuple[str, ...], convert: Callable[[str], str]) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if not isinstance(value, str) or convert(value) not in choices:
            raise vol.Invalid(f"expected one of {', '.join(choices)}")
        return convert(value)

    return validate


def _languages(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of language codes to {components: [...]}")
    if not value:
        raise ExplainedInvalid("expected at least one language, such as en: {components: [...]}")
    return value


def _components(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of components (HEADER, BODY, FOOTER, BUTTONS)")
    if not value:
        raise ExplainedInvalid("expected at least a BODY component")
    return value


_NAMED_EXAMPLES = [{vol.Required("param_name"): str, vol.Required("example"): _example_text}]
FILE_SCHEMA = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("category"): _one_of(CATEGORIES, str.upper),
        vol.Optional("parameter_format", default="positional"): _one_of(PARAMETER_FORMATS, str.lower),
        vol.Required("languages"): _languages,
    }
)
LANGUAGE_SCHEMA = vol.Schema({vol.Required("components"): vol.All(_components, [dict])})
COMPONENT_SCHEMAS: dict[str, vol.Schema] = {
    "HEADER": vol.Schema(
        {
            vol.Required("type"): str,
            vol.Optional("format", default="TEXT"): _one_of(HEADER_FORMATS, str.upper),
            vol.Optional("text"): str,
            vol.Optional("example"): {
                vol.Optional("header_text"): [_example_text],
                vol.Optional("header_text_named_params"): _NAMED_EXAMPLES,
                vol.Optional("header_handle"): [str],
                # A local file, relative to the templates directory, uploaded for a handle.
                vol.Optional("header_file"): str,
            },
        }
    ),
    "BODY": vol.Schema(
        {
            vol.Required("type"): str,
            vol.Optional("text"): str,
            vol.Optional("add_security_recommendation"): bool,
            vol.Optional("example"): {
                vol.Optional("body_text"): [[_example_text]],
                vol.Optional("body_text_named_params"): _NAMED_EXAMPLES,
            },
        }
    ),
    "FOOTER": vol.Schema(
        {
            vol.Required("type"): str,
            vol.Optional("text"): str,
            vol.Optional("code_expiration_minutes"): vol.All(int, vol.Range(min=1, max=90)),
        }
    ),
    "BUTTONS": vol.Schema({vol.Required("type"): str, vol.Required("buttons"): vol.All([dict], vol.Length(min=1))}),
}
BUTTON_SCHEMAS: dict[str, vol.Schema] = {
    "QUICK_REPLY": vol.Schema({vol.Required("type"): str, vol.Required("text"): str}),
    "URL": vol.Schema(
        {
            vol.Required("type"): str,
            vol.Required("text"): str,
            vol.Required("url"): str,
            vol.Optional("example"): vol.Any([_example_text], _example_text),
        }
    ),
    "PHONE_NUMBER": vol.Schema(
        {vol.Required("type"): str, vol.Required("text"): str, vol.Required("phone_number"): str}
    ),
    "COPY_CODE": vol.Schema(
        {vol.Required("type"): str, vol.Optional("text"): str, vol.Required("example"): _example_text}
    ),
    # One-time passwords and flows carry many keys of their own, passed to Meta as written.
    "OTP": vol.Schema({vol.Required("type"): str, vol.Required("otp_type"): str}, extra=vol.ALLOW_EXTRA),
    "FLOW": vol.Schema({vol.Required("type"): str, vol.Required("text"): str}, extra=vol.ALLOW_EXTRA),
}
