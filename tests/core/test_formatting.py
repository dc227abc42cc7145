"""Markdown becomes WhatsApp formatting; long texts are split at natural places, within the limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wahub.core.conversations.formatting import MAX_TEXT, split_text, whatsapp_text

# --- whatsapp_text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("We open at **nine** and close __late__.", "We open at *nine* and close *late*."),
        ("This is *really* _very_ good.", "This is _really_ _very_ good."),
        ("***both***", "*_both_*"),
        ("~~old price~~ new price", "~old price~ new price"),
        ("# Opening hours", "*Opening hours*"),
        ("## **Delivery** ##", "*Delivery*"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("  - nested", "  • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("See [our prices](https://example.com/prices).", "See our prices (https://example.com/prices)."),
        ("[https://example.com](https://example.com)", "https://example.com"),
        ("![map](https://example.com/map.png)", "map (https://example.com/map.png)"),
        ("Type `menu` to start", "Type ```menu``` to start"),
        ("```python\nx = a**2 * b_c_d\n```", "```x = a**2 * b_c_d```"),
        ("snake_case_name and 2*3*4 stay", "snake_case_name and 2*3*4 stay"),
        ("a * b * c", "a * b * c"),
        ("Price: 5 € - 10 €", "Price: 5 € - 10 €"),
    ],
)
def test_markdown_becomes_whatsapp_formatting(markdown: str, whatsapp: str) -> None:
    assert whatsapp_text(markdown) == whatsapp


def test_a_whole_answer_converts() -> None:
    markdown = (
        "## Delivery\n\n"
        "We deliver **every day**:\n"
        "- in the city *the same day*;\n"
        "- elsewhere in 2 to 3 days.\n\n"
        "Track it at [our site](https://example.com) with `order 42`."
    )

    assert whatsapp_text(markdown) == (
        "*Delivery*\n\n"
        "We deliver *every day*:\n"
        "• in the city _the same day_;\n"
        "• elsewhere in 2 to 3 days.\n\n"
        "Track it at our site (https://example.com) with ```order 42```."
    )


def test_code_keeps_what_looks_like_markup() -> None:
    markdown = "Run:\n```\n- **not bold**\n# not a heading\n[x](y)\n```\nthen `**this**`."

    assert whatsapp_text(markdown) == "Run:\n```- **not bold**\n# not a heading\n[x](y)```\nthen ```**this**```."


_PLAIN = st.text(
    alphabet=st.characters(blacklist_characters="*_~`#[]()!-+\x00\x01", blacklist_categories=("Cs",)), max_size=200
)


@given(_PLAIN)
def test_text_without_markup_is_left_as_it_is(text: str) -> None:
    assert whatsapp_text(text) == text


@given(st.text(alphabet=st.characters(blacklist_characters="`\x00\x01", blacklist_categories=("Cs",)), max_size=80))
def test_a_fenced_blocks_content_is_never_changed(code: str) -> None:
    code = code.strip("\n") or "x"
    assert whatsapp_text(f"```\n{code}\n```") == f"```{code}```"


# --- split_text ---------------------------------------------------------------------


def test_a_short_text_is_one_part() -> None:
    assert split_text("  Hello!  ") == ["Hello!"]
    assert split_text("x" * MAX_TEXT) == ["x" * MAX_TEXT]
    assert split_text("   \n ") == []


def test_paragraphs_are_cut_first() -> None:
    first, second = "a" * 30 + ". " + "b" * 30, "c" * 40

    assert split_text(f"{first}\n\n{second}", limit=70) == [first, second]


def test_then_lines() -> None:
    assert split_text("one two\nthree four five", limit=16) == ["one two", "three four five"]


def test_then_sentences() -> None:
    text = "We open at nine. We close at six. Saturdays too!"

    assert split_text(text, limit=35) == ["We open at nine. We close at six.", "Saturdays too!"]


def test_then_words() -> None:
    assert split_text("the quick brown fox jumps", limit=10) == ["the quick", "brown fox", "jumps"]


def test_a_word_longer_than_the_limit_is_cut() -> None:
    assert split_text("see https://example.com/a/very/long/path ok", limit=12) == [
        "see",
        "https://exam",
        "ple.com/a/ve",
        "ry/long/path",
        "ok",
    ]


def test_a_hard_cut_keeps_accents_and_joined_emoji_whole() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    accented = "e\u0301" * 3

    assert split_text(accented, limit=3) == ["e\u0301", "e\u0301", "e\u0301"]
    assert "".join(split_text(family * 2, limit=6)) == family * 2
    assert all(not part.startswith("\u200d") for part in split_text(family * 2, limit=6))


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_text("hi", limit=0)


_TEXTS = st.text(
    alphabet=st.sampled_from([*"abcdefgh .!?\n\t", "é", "\u0301", "😀", "\u200d", "\ufe0f"]),
    max_size=400,
)


@given(_TEXTS, st.integers(min_value=1, max_value=120))
def test_every_part_fits_none_is_empty_and_only_whitespace_at_the_cuts_is_lost(text: str, limit: int) -> None:
    parts = split_text(text, limit)

    assert all(1 <= len(part) <= limit for part in parts)
    assert all(part == part.strip() for part in parts)
    position = 0
    for part in parts:
        found = text.index(part, position)
        assert text[position:found].strip() == ""  # between parts: whitespace only
        position = found + len(part)
    assert text[position:].strip() == ""


@given(st.lists(st.text(alphabet="abc d.", min_size=1, max_size=30), min_size=1, max_size=8))
def test_paragraphs_that_fit_are_never_cut(paragraphs: list[str]) -> None:
    paragraphs = [p.strip() for p in paragraphs if p.strip()]
    text = "\n\n".join(paragraphs)

    parts = split_text(text, limit=30)

    # Cut only between paragraphs: each part is whole paragraphs.
    assert [p for part in parts for p in part.split("\n\n")] == paragraphs
