"""Validators shared by wahub's configuration schemas, in the style of voluptuous.

Each validator returns the value to keep or raises ``vol.Invalid`` with a
message that says what was expected. Values written through ``!env_var`` are
strings, so the numeric validators also accept digit strings. A validator
whose message is already complete raises ``ExplainedInvalid``, so the
offending value is not appended to it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import voluptuous as vol

__all__ = [
    "LANGUAGE_CODE_EXAMPLE",
    "ExplainedInvalid",
    "canonical_language",
    "clock_time",
    "int_between",
    "language_code",
    "language_codes",
    "localized_text",
    "number_between",
    "proxy_network",
    "public_base_url",
    "seconds_between",
    "timezone_name",
]

LANGUAGE_CODE_EXAMPLE = "expected a language code such as en or pt-BR"

# A BCP 47 tag as people write it, "-" or "_" between subtags: the language
# (ISO 639, 2 or 3 letters, with up to three extlangs), then an optional
# script, region, variants, extensions and private use. Subtags are checked
# for shape, not against the IANA registry, so a daemon needs no data file.
_SUBTAG_SEPARATOR = re.compile(r"[-_]")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_EXTLANG = re.compile(r"[a-z]{3}")
_SCRIPT = re.compile(r"[a-z]{4}")
_REGION = re.compile(r"[a-z]{2}|[0-9]{3}")
_VARIANT = re.compile(r"[a-z0-9]{5,8}|[0-9][a-z0-9]{3}")
_SINGLETON = re.compile(r"[0-9a-wyz]")
_EXTENSION_PART = re.compile(r"[a-z0-9]{2,8}")
_PRIVATE_PART = re.compile(r"[a-z0-9]{1,8}")


class ExplainedInvalid(vol.Invalid):
    """A validation error whose message is complete: the offending value is not appended."""


#: A problem a cross-reference check finds: the path of the offending value, and what is wrong.
Reference = tuple[list[Any], str]


class Section:
    """A section schema that also checks what it names in other sections (the
    router's ``fallback`` names an ``ai:`` entry): ``references(config)``
    returns ``(path, message)`` problems once the whole configuration is valid,
    so that ``wahub check-config`` reports them with their line."""

    def __init__(self, schema: Any, references: Callable[[Mapping[str, Any]], Iterable[Reference]]) -> None:
        self.schema = schema
        self.references = references

    def __call__(self, value: Any) -> Any:
        return self.schema(value)


def int_between(low: int, high: int) -> Callable[[Any], int]:
    """A validator for an int in ``[low, high]``; digit strings (from ``!env_var``) are converted."""

    def validate(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise vol.Invalid("expected int")
        if not low <= value <= high:
            raise vol.Invalid(f"expected an int between {low} and {high}")
        return value

    return validate


def number_between(low: float, high: float, unit: str = "") -> Callable[[Any], float]:
    """A validator for a number in ``[low, high]``, as a float; numeric strings are converted.

    ``unit`` (``"seconds"``) is named in the messages: "expected a number of seconds".
    """
    noun = f"a number of {unit}" if unit else "a number"
    expected = f"expected {noun} between {_number(low)} and {_number(high)}"

    def validate(value: Any) -> float:
        if isinstance(value, bool):
            raise vol.Invalid(f"expected {noun}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise vol.Invalid(f"expected {noun}") from None
        if not low <= number <= high:  # also refuses NaN
            raise vol.Invalid(expected)
        return number

    return validate


def seconds_between(low: float, high: float) -> Callable[[Any], float]:
    """A validator for a number of seconds in ``[low, high]``, as a float; numeric strings are converted."""
    return number_between(low, high, "seconds")


def timezone_name(value: Any) -> str:
    """An IANA time zone name that this machine knows, such as ``Europe/Berlin``."""
    if not isinstance(value, str):
        raise vol.Invalid("expected an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExplainedInvalid(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from None
    return value


def clock_time(value: Any) -> dt.time:
    """A time of day written ``HH:MM`` (or ``HH:MM:SS``)."""
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError:
        raise vol.Invalid("expected a time of day as HH:MM, e.g. 21:00") from None


def _number(value: float) -> str:
    """``86400.0`` -> ``86400``, ``0.05`` -> ``0.05``: a bound as a person writes it."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def shorter_forms(code: str) -> list[str]:
    """``code`` and each shorter prefix of it, longest first (RFC 4647 lookup:
    ``zh-Hant-TW``, ``zh-Hant``, ``zh``), a singleton (``-x``) never left last."""
    parts = code.split("-")
    forms = []
    while parts:
        forms.append("-".join(parts))
        parts.pop()
        while len(parts) > 1 and len(parts[-1]) == 1:
            parts.pop()
    return forms


def canonical_language(code: str) -> str | None:
    """``code`` in BCP 47's canonical case (``pt_br`` -> ``pt-BR``, ``ZH-HANT`` -> ``zh-Hant``), or None.

    None means ``code`` is not shaped like a language tag (``english``,
    ``pt--BR``, an empty string).
    """
    parts = _SUBTAG_SEPARATOR.split(code.strip().lower())
    if not _LANGUAGE.fullmatch(parts[0]):
        return None
    canonical = [parts[0]]
    index = 1
    while index < len(parts) and index <= 3 and _EXTLANG.fullmatch(parts[index]):
        canonical.append(parts[index])
        index += 1
    if index < len(parts) and _SCRIPT.fullmatch(parts[index]):
        canonical.append(parts[index].title())
        index += 1
    if index < len(parts) and _REGION.fullmatch(parts[index]):
        canonical.append(parts[index].upper())
        index += 1
    while index < len(parts) and _VARIANT.fullmatch(parts[index]):
        canonical.append(parts[index])
        index += 1
    rest = _extensions(parts[index:])
    return None if rest is None else "-".join(canonical + rest)


def _extensions(parts: list[str]) -> list[str] | None:
    """The extensions and private use ending a tag (``u-ca-buddhist``, ``x-foo``), or None if malformed."""
    index = 0
    while index < len(parts):
        singleton = parts[index]
        pattern = _PRIVATE_PART if singleton == "x" else _EXTENSION_PART
        if singleton != "x" and not _SINGLETON.fullmatch(singleton):
            return None
        end = index + 1
        while end < len(parts) and (singleton == "x" or len(parts[end]) > 1) and pattern.fullmatch(parts[end]):
            end += 1
        if end == index + 1:
            return None  # a singleton needs at least one subtag after it
        index = end
    return parts


#: The longest language code kept (``contacts.language``); real ones are far shorter.
MAX_LANGUAGE_CODE = 35


def language_code(value: Any) -> str:
    """A BCP 47 language tag (``en``, ``pt_br``, ``zh-Hant``, ``es-419``), returned in its canonical form."""
    canonical = canonical_language(value) if isinstance(value, str) else None
    if canonical is None:
        raise vol.Invalid(LANGUAGE_CODE_EXAMPLE)
    if len(canonical) > MAX_LANGUAGE_CODE:
        raise ExplainedInvalid(f"a language code has at most {MAX_LANGUAGE_CODE} characters (contacts keep it)")
    return canonical


def language_codes(value: Any) -> list[str] | None:
    """A non-empty list of language codes, canonicalised, each kept once in the order written.

    None (the key written with no value) stays None: no list was given.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of language codes such as [en, pt-BR]")
    if not value:
        raise ExplainedInvalid(
            "expected at least one language code, e.g. [en, pt-BR]; "
            "leave the key out to detect the languages of the configured texts"
        )
    codes: list[str] = []
    for index, entry in enumerate(value):
        try:
            code = language_code(entry)
        except vol.Invalid as error:
            raise vol.Invalid(error.msg, path=[index]) from None
        if code not in codes:
            codes.append(code)
    return codes


def localized_text(max_length: int) -> Callable[[Any], str | dict[str, str]]:
    """A validator for a text, or a mapping ``{language code: text}`` (a text per language).

    Each text has 1 to ``max_length`` characters; a mapping has at least one
    entry, its keys canonicalised (``pt_br`` -> ``pt-BR``) and kept in the
    order written, since its first entry is the last resort of a fallback chain.
    """

    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected a text, or a mapping of language codes to texts (en: Hello)")
        if not value.strip():
            raise ExplainedInvalid("the text is empty: write at least one character")
        if len(value) > max_length:
            raise ExplainedInvalid(f"the text has {len(value)} characters, more than the {max_length} allowed")
        return value

    def validate(value: Any) -> str | dict[str, str]:
        if not isinstance(value, Mapping):
            return text(value)
        if not value:
            raise ExplainedInvalid("expected at least one language, e.g. en: Hello")
        texts: dict[str, str] = {}
        spelled: dict[str, Any] = {}
        for key, entry in value.items():
            code = canonical_language(key) if isinstance(key, str) else None
            if code is None:
                # The path leads to the text, so the key is named here.
                raise ExplainedInvalid(f"the key {key!r} is not a language code: {LANGUAGE_CODE_EXAMPLE}", path=[key])
            if code in texts:
                raise ExplainedInvalid(f"{key!r} is the language {code} again (as {spelled[code]!r})", path=[key])
            try:
                texts[code] = text(entry)
            except vol.Invalid as error:
                raise type(error)(error.msg, path=[key]) from None
            spelled[code] = key
        return texts

    return validate


def proxy_network(value: Any) -> str:
    """A trusted proxy: an IP address or a CIDR network, kept as the network's text."""
    example = "e.g. 10.0.0.2, 172.16.0.0/12 or fd00::/8"
    if not isinstance(value, str):
        raise vol.Invalid(f"expected an IP address or a CIDR network ({example}), as text")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise vol.Invalid(f"{value!r} is not an IP address or a CIDR network ({example})") from None
    raise vol.Invalid(f"{value!r} has host bits set: write the network as {network}")


def public_base_url(value: Any) -> str:
    """An absolute http(s) URL without query or fragment (a path prefix is kept),
    without its trailing ``/``."""
    example = "e.g. https://hooks.example.com or https://example.com/wahub"
    if not isinstance(value, str):
        raise vol.Invalid(f"expected a URL ({example})")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExplainedInvalid(f"{value!r} is not an http(s) URL with a host ({example})")
    if parts.query or parts.fragment:
        raise ExplainedInvalid(f"{value!r} has a query or fragment: give the scheme, host and path prefix only")
    return value.strip().rstrip("/")
