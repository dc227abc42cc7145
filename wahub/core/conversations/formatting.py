"""Texts for WhatsApp: Markdown turned into WhatsApp's formatting, long texts split to its limit.

WhatsApp writes ``*bold*``, ``_italic_``, ``~strikethrough~`` and
````` ```monospace``` `````; a text message holds at most 4096 characters.
A model (or a FAQ) writes Markdown, so ``whatsapp_text`` converts it, and
``split_text`` cuts what is too long at the most natural place it can.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["MAX_TEXT", "split_text", "whatsapp_text"]

#: The most characters a WhatsApp text message holds.
MAX_TEXT = 4096

# Placeholders that no text contains: code is set aside while the rest is converted,
# and bold is marked apart from italics until both are done.
_CODE = "\x00{}\x00"
_BOLD = "\x01"

_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)\n?[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(?=\S)", re.MULTILINE)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\(([^)\s]+)(?:[ \t]+\"[^\"\n]*\")?\)")
_STRONG_EMPHASIS = re.compile(r"(\*\*\*|___)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)
_STAR_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", re.DOTALL)
_UNDERSCORE_EMPHASIS = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])", re.DOTALL)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.DOTALL)


def whatsapp_text(markdown: str) -> str:
    """``markdown`` in WhatsApp's formatting: ``**b**``/``__b__`` -> ``*b*``,
    ``*i*``/``_i_`` -> ``_i_``, ``~~s~~`` -> ``~s~``, headings -> a bold line,
    ``-``/``*``/``+`` bullets -> ``• ``, numbered lists as they are,
    ``[text](url)`` -> ``text (url)``, code spans and fenced blocks -> ``` ```monospace``` ```
    with their content untouched."""
    codes: list[str] = []
    text = _FENCE.sub(_keep(codes, lambda found: f"```{found[1]}```"), markdown)
    text = _CODE_SPAN.sub(_keep(codes, lambda found: f"```{found[2].strip()}```"), text)
    text = _HEADING.sub(lambda found: f"{_BOLD}{_plain_heading(found[1])}{_BOLD}", text)
    text = _BULLET.sub(lambda found: f"{found[1]}• ", text)
    text = _IMAGE_OR_LINK.sub(_link, text)
    text = _STRONG_EMPHASIS.sub(lambda found: f"{_BOLD}_{found[2]}_{_BOLD}", text)
    text = _STRONG.sub(lambda found: f"{_BOLD}{found[2]}{_BOLD}", text)
    text = _STAR_EMPHASIS.sub(lambda found: f"_{found[1]}_", text)
    text = _UNDERSCORE_EMPHASIS.sub(lambda found: f"_{found[1]}_", text)
    text = _STRIKE.sub(lambda found: f"~{found[1]}~", text)
    text = text.replace(_BOLD, "*")
    return re.sub(r"\x00(\d+)\x00", lambda found: codes[int(found[1])], text)


def _keep(codes: list[str], render: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
    """A substitution that sets the rendered code aside and leaves its placeholder."""

    def substitute(found: re.Match[str]) -> str:
        codes.append(render(found))
        return _CODE.format(len(codes) - 1)

    return substitute


def _plain_heading(text: str) -> str:
    # A heading is bold already: emphasis markers inside it would only nest.
    return re.sub(r"\*\*|__", "", text).strip()


def _link(found: re.Match[str]) -> str:
    label, url = found[1].strip(), found[2]
    if not label or label == url or (url.startswith("mailto:") and label == url[7:]):
        return url
    return f"{label} ({url})"


# Cut points from the most natural to the least: a paragraph break, a line
# break, the space after a sentence's end, any whitespace.
_CUTS = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n\s*"),
    re.compile(r"(?<=[.!?…。！？])\s+"),
    re.compile(r"\s+"),
)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut at a paragraph
    break if one fits, else a line break, else a sentence's end, else between
    words; a word longer than ``limit`` is cut. No part is empty or begins or
    ends with whitespace; only the whitespace at the cuts (and around the
    text) is dropped."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1 character, not {limit}")
    rest = text.strip()
    parts = []
    while len(rest) > limit:
        start, end = _cut(rest, limit)
        parts.append(rest[:start].rstrip())
        rest = rest[end:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _cut(text: str, limit: int) -> tuple[int, int]:
    """Where to cut ``text`` (which begins with a non-space and is longer than
    ``limit``): the part ends at the first index, the rest starts at the second."""
    window = text[: limit + 1]  # whitespace just after the limit is a cut too
    for pattern in _CUTS:
        last = None
        for found in pattern.finditer(window):
            if 0 < found.start() <= limit:
                last = found
        if last is not None:
            return last.start(), last.start()
    cut = limit
    # Not inside a character made of several code points (an accent, a joined emoji).
    while cut > 1 and _joins(text, cut):
        cut -= 1
    return (cut, cut) if cut > 1 or not _joins(text, cut) else (limit, limit)


def _joins(text: str, index: int) -> bool:
    """Whether the code points at ``index - 1`` and ``index`` belong to one character."""
    after, before = text[index], text[index - 1]
    return bool(unicodedata.combining(after)) or "\u200d" in (after, before) or "\ufe00" <= after <= "\ufe0f"
