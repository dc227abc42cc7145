"""Languages of contacts: codes as people write them, fallback chains, localized texts, detection."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol

from wahub.core.config.schema import WAHUB_SCHEMA, ConfigError, load_config
from wahub.core.config.validators import language_code, language_codes, localized_text
from wahub.core.conversations.language import (
    LanguageDetector,
    base_language,
    fallback_chain,
    localized,
    text_to_detect,
)
from wahub.core.plugins import registered_providers, registered_sections
from wahub.testing import plugin_manager

# --- codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("pt-BR", "pt-BR"),
        ("pt_br", "pt-BR"),
        ("zh-Hant", "zh-Hant"),
        ("ZH_hant_tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("sr-latn-rs", "sr-Latn-RS"),
        ("de-CH-1996", "de-CH-1996"),
        ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
        (" pt-br ", "pt-BR"),
    ],
)
def test_language_codes_are_returned_in_canonical_form(written: str, canonical: str) -> None:
    assert language_code(written) == canonical


@pytest.mark.parametrize("written", ["english", "portuguese", "pt--BR", "pt-", "", "e", "x-private", "en-a", 42, None])
def test_a_value_that_is_no_language_code_is_refused_with_an_example(written: Any) -> None:
    with pytest.raises(vol.Invalid, match="expected a language code such as en or pt-BR"):
        language_code(written)


def test_a_list_of_codes_is_canonicalised_and_each_kept_once() -> None:
    assert language_codes(["EN", "pt_br", "pt-BR", "ru"]) == ["en", "pt-BR", "ru"]
    assert language_codes(None) is None
    with pytest.raises(vol.Invalid, match="at least one language code"):
        language_codes([])
    with pytest.raises(vol.Invalid) as refused:
        language_codes(["en", "russian"])
    assert refused.value.path == [1]


def test_the_core_schema_defaults_to_english_and_no_list_of_languages() -> None:
    validated = WAHUB_SCHEMA({})
    assert validated["language"] == "en"
    assert validated["languages"] is None
    written = WAHUB_SCHEMA({"language": "pt_br", "languages": ["en", "pt-br"]})
    assert (written["language"], written["languages"]) == ("pt-BR", ["en", "pt-BR"])


def test_configuration_errors_name_the_file_line_and_what_a_code_looks_like(tmp_path: Path) -> None:
    path = tmp_path / "wahub.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            wahub:
              language: english
              languages:
                - en
                - portuguese
            """
        )
    )
    pm = plugin_manager()
    with pytest.raises(ConfigError) as failed:
        load_config(path, sections=registered_sections(pm), platforms=registered_providers(pm))
    problems = {problem.path: problem for problem in failed.value.problems}
    assert problems["wahub.language"].line == 2
    assert problems["wahub.language"].message == "expected a language code such as en or pt-BR, got 'english'"
    assert problems["wahub.languages[1]"].line == 5
    assert problems["wahub.languages[1]"].message == "expected a language code such as en or pt-BR, got 'portuguese'"


# --- localized texts in the configuration --------------------------------------------------

REPLY = vol.Schema({"reply": localized_text(20)})


def test_a_localized_text_is_a_text_or_a_mapping_with_canonical_keys_in_written_order() -> None:
    assert REPLY({"reply": "Hello"}) == {"reply": "Hello"}
    validated = REPLY({"reply": {"pt_br": "Olá", "EN": "Hello"}})
    assert list(validated["reply"].items()) == [("pt-BR", "Olá"), ("en", "Hello")]


@pytest.mark.parametrize(
    ("reply", "path", "message"),
    [
        ({}, ["reply"], "expected at least one language, e.g. en: Hello"),
        (
            {"english": "Hi"},
            ["reply", "english"],
            "the key 'english' is not a language code: expected a language code such as en or pt-BR",
        ),
        ({"en": ""}, ["reply", "en"], "the text is empty: write at least one character"),
        ({"en": "x" * 21}, ["reply", "en"], "the text has 21 characters, more than the 20 allowed"),
        ("x" * 21, ["reply"], "the text has 21 characters, more than the 20 allowed"),
        ({"pt-br": "Oi", "pt_BR": "Olá"}, ["reply", "pt_BR"], "'pt_BR' is the language pt-BR again (as 'pt-br')"),
        (5, ["reply"], "expected a text, or a mapping of language codes to texts (en: Hello)"),
        ({"en": 5}, ["reply", "en"], "expected a text, or a mapping of language codes to texts (en: Hello)"),
    ],
)
def test_a_bad_localized_text_is_refused_at_its_key(reply: Any, path: list[str], message: str) -> None:
    with pytest.raises(vol.MultipleInvalid) as refused:
        REPLY({"reply": reply})
    [error] = refused.value.errors
    assert ([str(step) for step in error.path], error.msg) == (path, message)


# --- chains and localized ------------------------------------------------------------------


def test_base_language_is_the_first_subtag() -> None:
    assert [base_language(code) for code in ("pt-BR", "pt_br", "zh-Hant-TW", "es-419", "ru")] == [
        "pt",
        "pt",
        "zh",
        "es",
        "ru",
    ]
    with pytest.raises(ValueError, match="not a language code"):
        base_language("portuguese")


@pytest.mark.parametrize(
    ("language", "default", "chain"),
    [
        ("pt-BR", "en", ["pt-BR", "pt", "en"]),
        ("pt-BR", "en-GB", ["pt-BR", "pt", "en-GB", "en"]),
        ("pt_br", "pt", ["pt-BR", "pt"]),
        ("en-GB", "en-US", ["en-GB", "en", "en-US"]),
        ("en", "en", ["en"]),
        ("zh-Hant-TW", "en", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
        (None, "pt-BR", ["pt-BR", "pt"]),
        ("", "en", ["en"]),
    ],
)
def test_the_fallback_chain_goes_from_the_contact_to_the_default(
    language: str | None, default: str, chain: list[str]
) -> None:
    assert fallback_chain(language, default) == chain


def test_a_stored_language_that_is_no_code_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wahub.core.conversations.language"):
        assert fallback_chain("klingon!", "en") == ["en"]
    assert "klingon!" in caplog.text


TEXTS = {"en": "Hello", "pt": "Olá", "pt-PT": "Olá, bom dia", "ru": "Здравствуйте"}


@pytest.mark.parametrize(
    ("language", "default", "expected"),
    [
        ("pt-PT", "en", "Olá, bom dia"),  # the contact's own form
        ("pt-BR", "en", "Olá"),  # its base language
        ("de", "ru", "Здравствуйте"),  # the default
        ("de", "ru-RU", "Здравствуйте"),  # the default's base
        (None, "en", "Hello"),
        ("fr", "it", "Hello"),  # nothing in the chain: the first entry, never silence
    ],
)
def test_localized_takes_the_first_language_of_the_chain_the_text_has(
    language: str | None, default: str, expected: str
) -> None:
    assert localized(TEXTS, language, default) == expected


def test_localized_plain_text_is_itself_and_keys_are_compared_canonically() -> None:
    assert localized("Hi there", "ru", "en") == "Hi there"
    assert localized({"en": "Hello", "pt_br": "Oi"}, "pt-BR", "en") == "Oi"
    with pytest.raises(ValueError, match="at least one language"):
        localized({}, "en", "en")


# --- detection -----------------------------------------------------------------------------

EN_RU_PT = LanguageDetector(["en", "ru", "pt"])


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Какие у вас часы работы?", "ru"),
        ("здравствуйте, где мой заказ?? 😡", "ru"),
        ("qual o horário de funcionamento?", "pt"),
        ("meu pedido ainda nao chegou", "pt"),  # no diacritics
        ("vcs entregam no centro? 🙏", "pt"),
        ("what are your opening hours?", "en"),
        ("can i pay by card", "en"),
    ],
)
def test_detection_among_english_russian_and_portuguese(text: str, language: str) -> None:
    assert EN_RU_PT.detect(text) == language


@pytest.mark.parametrize("text", ["ok", "👍", "12345", "🙏🙏 👍", "+1 555 0100", "https://example.com/order/123", ""])
def test_texts_in_no_language_give_no_answer(text: str) -> None:
    assert EN_RU_PT.detect(text) is None
    assert text_to_detect(text) is None


def test_detection_answers_with_the_configured_code_of_the_base_language() -> None:
    detector = LanguageDetector(["en-US", "pt_br", "es-419"])
    assert detector.languages == ("en-US", "pt-BR", "es-419")
    assert detector.detect("bom dia, tenho uma dúvida sobre o meu pedido") == "pt-BR"
    assert detector.detect("¿cuál es su horario de atención?") == "es-419"


def test_detection_among_eight_languages_of_short_messages() -> None:
    detector = LanguageDetector(["en", "ru", "pt", "es", "de", "fr", "it", "tr"])
    found = {
        "wie sind eure Öffnungszeiten?": "de",
        "je voudrais réserver une table pour deux ce soir": "fr",
        "vorrei prenotare un tavolo per due stasera": "it",
        "siparişim hala gelmedi": "tr",
        "quiero cancelar mi pedido": "es",
        "quero cancelar meu pedido": "pt",
    }
    assert {text: detector.detect(text) for text in found} == found


def test_the_model_read_for_some_languages_answers_as_py3langid_restricted_to_them() -> None:
    """Detection reads only the configured languages' weights from the model
    file; every short message of the benchmark's gets the same label and
    probability as from py3langid's whole model restricted with ``set_languages``."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    languages = ["de", "en", "es", "fr", "it", "pt", "ru", "tr"]
    detector = LanguageDetector(languages)
    detector.detect("warm up")
    whole = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    whole.set_languages(languages)
    data = Path(__file__).parents[2] / "bench" / "data" / "short_texts.tsv"
    texts = [line.split("\t", 1)[1] for line in data.read_text(encoding="utf-8").splitlines() if "\t" in line]
    assert len(texts) > 250
    for text in texts:
        label, probability = detector._identifier.classify(text)
        expected_label, expected_probability = whole.classify(text)
        assert (label, probability) == pytest.approx((expected_label, expected_probability), abs=1e-9), text


def test_an_unconfident_guess_gives_no_answer() -> None:
    certain_only = LanguageDetector(["en", "ru", "pt"], min_confidence=1.01)
    assert certain_only.detect("what are your opening hours?") is None


def test_with_fewer_than_two_known_languages_there_is_nothing_to_choose(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wahub.core.conversations.language"):
        assert LanguageDetector(["pt"]).detect("qual o horário de funcionamento?") is None
        assert LanguageDetector(["en", "tlh"]).detect("what are your opening hours?") is None
    assert "does not know ['tlh']" in caplog.text


def test_with_one_language_the_model_is_never_read() -> None:
    """Nothing to choose between: neither the model nor numpy (about 15 MB) is loaded."""
    program = (
        "import sys\n"
        "from wahub.core.conversations.language import LanguageDetector\n"
        "assert LanguageDetector(['en', 'en-GB']).detect('what are your opening hours?') is None\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'numpy', 'py3langid'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_model_is_read_once_on_first_use_and_works_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import lzma

    reads: list[str] = []
    open_packed = lzma.open

    def counted(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(str(path))
        return open_packed(path, *args, **kwargs)

    def no_network(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError("no network in this test")

    monkeypatch.setattr(lzma, "open", counted)
    monkeypatch.setattr(socket, "socket", no_network)
    detector = LanguageDetector(["en", "ru"])
    assert reads == []
    assert [detector.detect(text) for text in ("hello, are you open today?", "вы сегодня открыты?", "ok")] == [
        "en",
        "ru",
        None,
    ]
    assert len(reads) == 1
