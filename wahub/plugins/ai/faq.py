"""The offline FAQ: answers from a file of questions and answers, matched with rapidfuzz.

The default AI backend: it needs no network and no model. Configuration::

    ai:
      - platform: faq
        name: faq
        entries: !include faq.yaml     # [{id, language, questions: [...], answer, handoff}, ...]
        threshold: 80                  # 0-100: the least score that answers
        scorer: token_set_ratio        # how a text is compared with a question
        on_miss: default_reply         # or handoff: ask for a person
        handoff_reply: "Connecting you with a person."   # or {en: ..., es: ...}

Texts and questions are normalised before they are compared (case-folded,
punctuation and repeated whitespace made single spaces). The question that
scores highest answers; of equal scores the one written first wins. Entries
sharing an ``id`` are translations: when the best question's entry has a
translation in the contact's language (or its base language), that
translation answers. An entry with ``handoff: true`` (a "talk to a person"
entry) answers and asks for a person.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import voluptuous as vol

from wahub import hookimpl
from wahub.core.ai import AI_SCHEMA_BASE, AIAnswer, AIBackend, AIHost, AIRequest
from wahub.core.config.validators import ExplainedInvalid, language_code, localized_text, number_between
from wahub.core.conversations.language import base_language, localized

__all__ = ["DEFAULT_THRESHOLD", "SCORERS", "FaqBackend", "FaqEntry", "FaqMatch", "normalize"]

_LOGGER = logging.getLogger(__name__)

#: The rapidfuzz scorers a FAQ may use, by the name its ``scorer:`` gives
#: (rapidfuzz is imported when a FAQ is configured, not before).
#: ``token_set_ratio`` (the default) scores a longer message that contains a
#: question's words ("hi, what are your opening hours please") as that question.
SCORERS = ("token_set_ratio", "token_sort_ratio", "partial_ratio", "ratio", "WRatio")
DEFAULT_SCORER = "token_set_ratio"
#: With ``token_set_ratio``, the paraphrases of ``faq.example.yaml``'s
#: questions score 83 or more and unrelated messages 78 at most (see the tests).
DEFAULT_THRESHOLD = 80.0
DEFAULT_HANDOFF_REPLY = "Connecting you with a person."
#: Why a FAQ asks for a person when nothing matched (``on_miss: handoff``).
MISS_HANDOFF = "faq_miss"

_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """``text`` as it is compared: NFKC, case-folded, each run of punctuation
    and whitespace one space, trimmed."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@dataclass(frozen=True)
class FaqEntry:
    """One question (in its variants) and its answer, in one language."""

    id: str | None
    language: str
    questions: tuple[str, ...]
    answer: str
    #: Whether answering it also asks for a person (a "talk to a person" entry).
    handoff: bool = False
    #: Its position in the file, from 0.
    index: int = 0


@dataclass(frozen=True)
class FaqMatch:
    """The best match of a text: the entry whose question scored best, that
    question and its score (0-100), and the answer in the language asked for
    (``entry``'s own, or a translation's)."""

    entry: FaqEntry
    question: str
    score: float
    answer: str
    #: The language of ``answer``.
    language: str


def _question_list(value: Any) -> list[str]:
    questions = [value] if isinstance(value, str) else value
    if not isinstance(questions, list) or not questions:
        raise ExplainedInvalid("expected a list of questions (at least one)")
    for index, question in enumerate(questions):
        if not isinstance(question, str) or not normalize(question):
            raise ExplainedInvalid("expected a question with at least one letter or digit", path=[index])
    return questions


_ENTRY_SCHEMA = vol.Schema(
    {
        # YAML reads `id: 7` as a number; it names the entry all the same.
        vol.Optional("id"): vol.All(vol.Any(str, int, msg="expected a name"), vol.Coerce(str), vol.Length(min=1)),
        vol.Required("language"): language_code,
        vol.Required("questions"): _question_list,
        vol.Required("answer"): vol.All(str, vol.Length(min=1, msg="an answer cannot be empty")),
        vol.Optional("handoff", default=False): bool,
    }
)


def _some_entries(value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ExplainedInvalid(
            "expected a list of entries ({language, questions, answer}), at least one; "
            "for example `entries: !include faq.yaml`"
        )
    return value


def _one_per_language(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries sharing an ``id`` are translations: no two of them in one language."""
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        if "id" not in entry:
            continue
        key = (entry["id"], entry["language"].lower())
        if key in seen:
            raise ExplainedInvalid(
                f"entry id {entry['id']!r} already has a {entry['language']} entry (entries[{seen[key]}]); "
                "entries sharing an id are translations, one per language",
                path=[index, "id"],
            )
        seen[key] = index
    return entries


#: A list schema the problems' "did you mean" can look into for the keys of an entry.
_ENTRIES = vol.All(_some_entries, [_ENTRY_SCHEMA], _one_per_language)


def _scorer(value: Any) -> str:
    if value not in SCORERS:
        raise ExplainedInvalid(f"unknown scorer {value!r} (available: {', '.join(SCORERS)})")
    return str(value)


class FaqBackend(AIBackend):
    """Answers from its entries; see the module's docstring for the configuration."""

    PLATFORM: ClassVar[str] = "faq"
    CONFIG_SCHEMA: ClassVar[vol.Schema] = AI_SCHEMA_BASE.extend(
        {
            vol.Required("entries"): _ENTRIES,
            vol.Optional("threshold", default=DEFAULT_THRESHOLD): number_between(0, 100),
            vol.Optional("scorer", default=DEFAULT_SCORER): _scorer,
            vol.Optional("on_miss", default="default_reply"): vol.In(
                ["default_reply", "handoff"], msg="expected default_reply or handoff"
            ),
            vol.Optional("handoff_reply", default=DEFAULT_HANDOFF_REPLY): localized_text(4096),
        }
    )

    def __init__(self, host: AIHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self.entries: tuple[FaqEntry, ...] = tuple(_entry(index, raw) for index, raw in enumerate(config["entries"]))
        self._threshold = float(config.get("threshold", DEFAULT_THRESHOLD))
        from rapidfuzz import fuzz

        self._score: Callable[..., float] = getattr(fuzz, config.get("scorer", DEFAULT_SCORER))
        # Normalised once: (normalised question, its entry, the question as written), in file order.
        self._variants = [(normalize(q), entry, q) for entry in self.entries for q in entry.questions]

    def languages(self) -> set[str]:
        """The languages the entries are written in."""
        return {entry.language for entry in self.entries}

    def match(self, text: str, language: str) -> FaqMatch | None:
        """The entry whose question is closest to ``text``, if it scores at
        least the threshold, answered in ``language`` where a translation has it."""
        query = normalize(text)
        if not query:
            return None
        best: tuple[float, FaqEntry, str] | None = None
        for variant, entry, question in self._variants:
            score = float(self._score(query, variant))
            if best is None or score > best[0]:  # strictly greater: the first written wins a tie
                best = (score, entry, question)
        if best is None or best[0] < self._threshold:
            return None
        score, entry, question = best
        answering = self._translation(entry, language)
        return FaqMatch(entry, question, score, answering.answer, answering.language)

    def _translation(self, entry: FaqEntry, language: str) -> FaqEntry:
        """``entry``'s translation in ``language`` (then its base language), else ``entry``."""
        if entry.id is None or entry.language.lower() == language.lower():
            return entry
        siblings = [other for other in self.entries if other.id == entry.id]
        for wanted in (language.lower(), base_language(language)):
            for other in siblings:
                if other.language.lower() == wanted:
                    return other
        return entry

    def knowledge(self, language: str) -> list[tuple[str, str]]:
        """Each question once, as ``(question, answer)`` in ``language`` where a
        translation has it (else as written), in file order: what a model is told."""
        told: set[str] = set()
        pairs = []
        for entry in self.entries:
            if entry.id is not None:
                if entry.id in told:
                    continue
                told.add(entry.id)
            answering = self._translation(entry, language)
            pairs.append((answering.questions[0], answering.answer))
        return pairs

    def answer(self, found: FaqMatch) -> AIAnswer:
        """The answer a match gives: its text, and a hand-off if its entry asks for one."""
        key = found.entry.id or found.entry.index
        handoff = f"faq:{key}" if found.entry.handoff else None
        return AIAnswer(text=found.answer, handoff=handoff, details={"faq_entry": key, "score": round(found.score, 1)})

    async def reply(self, request: AIRequest) -> AIAnswer:
        """A match answers (and asks for a person if its entry says so); a
        miss is no answer, or with ``on_miss: handoff`` the hand-off reply."""
        found = self.match(turn_text(request.messages), request.language)
        if found is None:
            _LOGGER.debug("faq %s: no question scored %.0f or more", self.name, self._threshold)
            if self.config.get("on_miss") == "handoff":
                reply = localized(
                    self.config.get("handoff_reply", DEFAULT_HANDOFF_REPLY),
                    request.language,
                    self.host.config["wahub"]["language"],
                )
                return AIAnswer(text=reply, handoff=MISS_HANDOFF)
            return AIAnswer()
        _LOGGER.debug("faq %s: entry %s answers (score %.1f)", self.name, found.entry.index, found.score)
        return self.answer(found)


def turn_text(messages: Sequence[str]) -> str:
    """The texts of a turn as one text, the way a FAQ matches them."""
    return "\n".join(text for text in messages if text)


def _entry(index: int, raw: Mapping[str, Any]) -> FaqEntry:
    return FaqEntry(
        id=raw.get("id"),
        language=raw["language"],
        questions=tuple(raw["questions"]),
        answer=raw["answer"],
        handoff=bool(raw.get("handoff", False)),
        index=index,
    )


@hookimpl
def register_ai_backends() -> Iterable[type[AIBackend]]:
    return [FaqBackend]
