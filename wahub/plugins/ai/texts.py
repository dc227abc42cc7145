"""Language codes and texts in several languages, as the AI backends' settings write them.

A language is a BCP 47 code (``en``, ``pt-BR``, ``zh-Hant``); a localized text
is one text for every language, or a mapping ``{language: text}`` from which
the contact's language is picked (then its base language, then English, then
the first one written).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wahub.core.config.validators import ExplainedInvalid

__all__ = ["base_language", "language_code", "localized_text", "pick_text"]

_CODE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
#: The language a localized text falls back on when neither the contact's nor its base is there.
FALLBACK_LANGUAGE = "en"


def language_code(value: Any) -> str:
    """A BCP 47 language code, written canonically: ``pt_br`` -> ``pt-BR``, ``zh-hant`` -> ``zh-Hant``."""
    if not isinstance(value, str) or not _CODE.match(value.strip()):
        raise ExplainedInvalid(
            f"expected a language code such as en, pt-BR or zh-Hant, got {value!r}"
            if isinstance(value, str)
            else "expected a language code such as en, pt-BR or zh-Hant"
        )
    first, *rest = re.split(r"[-_]", value.strip())
    parts = [first.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())  # a region
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())  # a script
        else:
            parts.append(part.lower())
    return "-".join(parts)


def base_language(code: str) -> str:
    """``pt-BR`` -> ``pt``; a code without a subtag is its own base."""
    return code.split("-", 1)[0].lower()


def localized_text(value: Any) -> str | dict[str, str]:
    """A non-empty text, or ``{language code: non-empty text}`` with at least one language."""
    if isinstance(value, str):
        if not value.strip():
            raise ExplainedInvalid("expected a text, got an empty one")
        return value
    if not isinstance(value, Mapping) or not value:
        raise ExplainedInvalid("expected a text, or a mapping of language codes to texts (e.g. {en: ..., es: ...})")
    texts: dict[str, str] = {}
    for language, text in value.items():
        code = language_code(language)
        if not isinstance(text, str) or not text.strip():
            raise ExplainedInvalid(f"expected a non-empty text for language {code}", path=[language])
        texts[code] = text
    return texts


def pick_text(text: str | Mapping[str, str], language: str) -> str:
    """The text for ``language``: itself if one text serves all; else the
    language's, its base language's, English, or the first written."""
    if isinstance(text, str):
        return text
    by_lower = {code.lower(): value for code, value in text.items()}
    for candidate in (language.lower(), base_language(language), FALLBACK_LANGUAGE):
        if candidate in by_lower:
            return by_lower[candidate]
    return next(iter(text.values()))
