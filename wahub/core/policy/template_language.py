"""Which language a template is sent in when the message names none.

A template is approved language by language (``en_US``, ``pt_BR``), and a
send without ``template.language`` gets the best approved one for its
contact. ``choose_language`` tries, in order:

1. the contact's language (``contacts.language``: ``pt-BR`` and ``pt_BR``
   are the same), then its shorter forms (``zh-Hant-TW``, ``zh-Hant``,
   ``zh``): a ``pt-BR`` contact gets ``pt_BR``, else ``pt``;
2. any other variant of the contact's base language, the first in
   alphabetical order so the choice is always the same: a ``pt-PT`` contact
   gets ``pt_BR`` when only that is approved;
3. the same for ``wahub.language``, the language of contacts whose own is
   not known.

Codes are compared in BCP 47's canonical form; the code written into the
message is the provider's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from wahub.core.config.validators import canonical_language, shorter_forms


def _normalised(code: str) -> str:
    return canonical_language(code) or code.strip().lower()


def choose_language(approved: Iterable[str], contact: str | None, default: str) -> tuple[str | None, list[str]]:
    """The approved code (as the provider writes it) to send in, or None, and
    what was tried, in order, for a refusal's message (``pt-PT``, ``pt``,
    ``any pt``...)."""
    by_code: dict[str, str] = {}
    for code in sorted(approved):
        by_code.setdefault(_normalised(code), code)
    tried: list[str] = []
    wanted = [canonical_language(code) for code in (contact, default) if code]
    for language in dict.fromkeys(code for code in wanted if code is not None):
        for form in shorter_forms(language):
            if form not in tried:
                tried.append(form)
            if form in by_code:
                return by_code[form], tried
        base = language.split("-", 1)[0]
        variants = [code for normalised, code in by_code.items() if normalised.split("-", 1)[0] == base]
        if f"any {base}" not in tried:
            tried.append(f"any {base}")
        if variants:
            return variants[0], tried
    return None, tried
