"""The offline FAQ: normalised fuzzy matching, the best question wins, translations answer, misses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wahub.core.ai import AIAnswer, AIBackend, AIRequest
from wahub.core.clock import Clock
from wahub.core.config.loader import load_yaml
from wahub.core.config.nodes import to_plain
from wahub.plugins.ai.faq import DEFAULT_THRESHOLD, FaqBackend, normalize

REPO = Path(__file__).resolve().parents[3]


@dataclass
class OfflineHost:
    """What a FAQ may use of the daemon: its default language, and no HTTP client."""

    config: dict[str, Any] = field(default_factory=lambda: {"wahub": {"language": "en"}})
    clock: Clock = field(default_factory=Clock)
    ai: dict[str, AIBackend] = field(default_factory=dict)


def faq(entries: list[Mapping[str, Any]], **settings: Any) -> FaqBackend:
    """A FAQ backend from a configuration validated as the daemon validates it."""
    config = FaqBackend.CONFIG_SCHEMA({"platform": "faq", "name": "faq", "entries": entries, **settings})
    return FaqBackend(OfflineHost(), config)  # type: ignore[arg-type]


def request(*messages: str, language: str = "en") -> AIRequest:
    return AIRequest(conversation_id=1, contact="15551234567", contact_name=None, language=language, messages=messages)


def example_faq(**settings: Any) -> FaqBackend:
    entries, problems = load_yaml(REPO / "faq.example.yaml")
    assert problems == []
    return faq(to_plain(entries), **settings)


HOURS = {"id": "hours", "language": "en", "questions": ["What are your opening hours?"], "answer": "9 to 18."}
HOURS_ES = {"id": "hours", "language": "es", "questions": ["¿Cuál es su horario?"], "answer": "De 9 a 18."}
HOURS_PT = {"id": "hours", "language": "pt", "questions": ["Qual é o horário?"], "answer": "Das 9 às 18."}
ADDRESS = {"id": "address", "language": "en", "questions": ["What is your address?"], "answer": "12 Market St."}

# Messages people write, and the entry each should find in faq.example.yaml.
PARAPHRASES = [
    ("what are your opening hours?", "hours"),
    ("Hi! What are your opening hours, please?", "hours"),
    ("WHEN ARE YOU OPEN", "hours"),
    ("opening hours?", "hours"),
    ("are you open on saturday?", "hours"),
    ("what time do you close today", "hours"),
    ("where are you", "address"),
    ("whats your address", "address"),
    ("do you do delivery?", "delivery"),
    ("how much does the delivery cost?", "delivery"),
    ("how long does the delivery take to arrive?", "delivery"),
    ("what are the prices", "prices"),
    ("can i talk to a human please", "person"),
    ("i want to speak to a person", "person"),
    ("Какие часы работы?", "hours"),
    ("qual o horário?", "hours"),
    ("¿a qué hora abren el sábado?", "hours"),
    ("price list", "prices"),
]
# Messages the FAQ has no answer for: the default threshold must let them through.
UNRELATED = [
    "hello",
    "hi there",
    "thanks a lot!",
    "my order 1234 has not arrived",
    "can you recommend a gift for my mother?",
    "ok",
    "I love your bread",
    "is the cake gluten free?",
    "do you sell coffee beans",
    "my package is damaged",
    "I need an invoice for my last order",
    "what is the weather like",
    "yes",
    "no thanks",
    "who are you",
    "good morning, how are you?",
    "can I pay by card?",
    "do you have vegan options?",
]


@pytest.mark.parametrize(("text", "entry"), PARAPHRASES)
def test_the_default_threshold_answers_what_people_ask(text: str, entry: str) -> None:
    found = example_faq().match(text, "en")

    assert found is not None, f"{text!r} found nothing"
    assert found.entry.id == entry
    assert found.score >= DEFAULT_THRESHOLD


@pytest.mark.parametrize("text", UNRELATED)
def test_the_default_threshold_lets_unrelated_messages_through(text: str) -> None:
    assert example_faq().match(text, "en") is None


def test_the_threshold_is_configurable() -> None:
    # "who are you" is closest to "When are you open?", at 78: answered at 70, not at the default.
    assert example_faq().match("who are you", "en") is None
    lenient = example_faq(threshold=70).match("who are you", "en")
    assert lenient is not None and lenient.entry.id == "hours" and 70 <= lenient.score < DEFAULT_THRESHOLD


def test_texts_are_compared_case_folded_without_punctuation_or_repeated_spaces() -> None:
    assert normalize("  What ARE your   opening-hours?!\n") == "what are your opening hours"
    assert normalize("Straße") == normalize("STRASSE")

    found = faq([HOURS]).match("WHAT are your opening hours???", "en")
    assert found is not None and found.score == 100.0


def test_the_best_question_wins_across_entries() -> None:
    backend = faq([ADDRESS, HOURS])

    found = backend.match("opening hours", "en")

    assert found is not None
    assert (found.entry.id, found.question, found.answer) == ("hours", "What are your opening hours?", "9 to 18.")


def test_equal_scores_go_to_the_entry_written_first() -> None:
    first = {"id": "a", "language": "en", "questions": ["delivery"], "answer": "first"}
    second = {"id": "b", "language": "en", "questions": ["Delivery!"], "answer": "second"}

    assert faq([first, second]).match("delivery", "en").answer == "first"  # type: ignore[union-attr]
    assert faq([second, first]).match("delivery", "en").answer == "second"  # type: ignore[union-attr]


def test_a_translation_in_the_contacts_language_answers() -> None:
    backend = faq([HOURS, HOURS_ES, HOURS_PT, ADDRESS])

    found = backend.match("opening hours", "es")

    assert found is not None
    assert (found.entry.language, found.language, found.answer) == ("en", "es", "De 9 a 18.")


def test_the_base_language_answers_a_regional_contact() -> None:
    found = faq([HOURS, HOURS_PT]).match("opening hours", "pt-BR")

    assert found is not None and (found.language, found.answer) == ("pt", "Das 9 às 18.")


def test_without_a_translation_the_matching_entry_answers() -> None:
    found = faq([HOURS, ADDRESS]).match("what is your address", "ru")

    assert found is not None and (found.language, found.answer) == ("en", "12 Market St.")


def test_languages_are_those_of_the_entries() -> None:
    assert faq([HOURS, HOURS_ES, ADDRESS]).languages() == {"en", "es"}
    assert example_faq().languages() == {"en", "ru", "pt", "es"}


def test_the_scorer_is_configurable() -> None:
    long_text = "hello there, I wanted to ask you: what are your opening hours? thanks a lot"

    by_set = faq([HOURS]).match(long_text, "en")
    by_ratio = faq([HOURS], scorer="ratio").match(long_text, "en")

    assert by_set is not None and by_set.score == 100.0
    assert by_ratio is None


async def test_a_hit_answers_with_the_entrys_text() -> None:
    answer = await faq([HOURS, HOURS_ES]).reply(request("Hola", "¿cuál es su horario?", language="es"))

    assert answer == AIAnswer(text="De 9 a 18.", details={"faq_entry": "hours", "score": 100.0})


async def test_a_miss_is_no_answer_so_the_default_reply_is_sent() -> None:
    answer = await faq([HOURS]).reply(request("my parcel is broken"))

    assert answer == AIAnswer()


async def test_a_miss_hands_off_with_the_reply_in_the_contacts_language() -> None:
    backend = faq(
        [HOURS], on_miss="handoff", handoff_reply={"en": "A person will answer.", "es": "Le atenderá una persona."}
    )

    assert await backend.reply(request("¿tienen café?", language="es-MX")) == AIAnswer(
        text="Le atenderá una persona.", handoff="faq_miss"
    )
    assert await backend.reply(request("do you sell coffee?", language="de")) == AIAnswer(
        text="A person will answer.", handoff="faq_miss"
    )


async def test_the_default_handoff_reply() -> None:
    answer = await faq([HOURS], on_miss="handoff").reply(request("do you sell coffee?"))

    assert answer == AIAnswer(text="Connecting you with a person.", handoff="faq_miss")


async def test_an_entry_marked_handoff_answers_and_asks_for_a_person() -> None:
    person = {"id": "person", "language": "en", "questions": ["talk to a person"], "answer": "Sure.", "handoff": True}

    answer = await faq([HOURS, person]).reply(request("I want to talk to a person"))

    assert (answer.text, answer.handoff) == ("Sure.", "faq:person")


async def test_an_empty_turn_matches_nothing() -> None:
    backend = faq([HOURS])

    assert backend.match("?!", "en") is None
    assert await backend.reply(request()) == AIAnswer()


def test_knowledge_tells_each_question_once_in_the_contacts_language() -> None:
    loose = {"language": "en", "questions": ["Do you sell gift cards?", "Gift cards?"], "answer": "Yes."}
    backend = faq([HOURS, HOURS_ES, ADDRESS, loose])

    assert backend.knowledge("es") == [
        ("¿Cuál es su horario?", "De 9 a 18."),
        ("What is your address?", "12 Market St."),
        ("Do you sell gift cards?", "Yes."),
    ]
    assert backend.knowledge("en")[0] == ("What are your opening hours?", "9 to 18.")


def test_rapidfuzz_loads_only_when_a_faq_is_configured() -> None:
    program = "import sys\nimport wahub.plugins.ai.faq\nprint('rapidfuzz' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
