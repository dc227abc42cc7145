"""The `ai:` list: validated like `providers:` (platform first, then the platform's schema), every problem at once."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from wahub import hookimpl
from wahub.core.ai import AIAnswer, AIBackend, AIRequest
from wahub.core.config.schema import ConfigError, default_config, load_config
from wahub.core.errors import PluginError
from wahub.core.plugins import check_registrations, registered_ai_backends, registered_providers, registered_sections
from wahub.plugins.ai.faq import FaqBackend
from wahub.plugins.ai.openai import OpenAIBackend
from wahub.testing import build_config, plugin_manager, running_daemon

REPO = Path(__file__).resolve().parents[2]
AVAILABLE = ", ".join(sorted(registered_ai_backends(plugin_manager())))


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path) -> dict[str, Any]:
    pm = plugin_manager()
    return load_config(
        path,
        sections=registered_sections(pm),
        platforms=registered_providers(pm),
        ai_platforms=registered_ai_backends(pm),
    )


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(problem) for problem in caught.value.problems]


#: The ``entries:`` key of an ``ai:`` entry, indented under ``  - platform: faq``.
FAQ_ENTRY = """\
    entries:
      - language: en
        questions: ["When are you open?"]
        answer: Every day.
"""


def test_the_built_in_platforms_are_registered() -> None:
    platforms = registered_ai_backends(plugin_manager())

    assert platforms == {"faq": FaqBackend, "openai": OpenAIBackend}
    assert all(issubclass(cls, AIBackend) for cls in platforms.values())


def test_ai_is_an_empty_list_by_default_and_for_callers_without_ai_platforms() -> None:
    pm = plugin_manager()

    config = default_config(sections=registered_sections(pm), platforms=registered_providers(pm))

    assert config["ai"] == []


def test_an_faq_entry_is_validated_by_its_platform_and_gets_its_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "ai:\n  - platform: faq\n    name: faq\n" + FAQ_ENTRY)

    [entry] = load(path)["ai"]

    assert entry == {
        "platform": "faq",
        "name": "faq",
        "entries": [{"language": "en", "questions": ["When are you open?"], "answer": "Every day.", "handoff": False}],
        "threshold": 80.0,
        "scorer": "token_set_ratio",
        "on_miss": "default_reply",
        "handoff_reply": "Connecting you with a person.",
    }


def test_unknown_platform_is_named_with_a_suggestion_and_the_available_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        ai:
          - platform: fqa
            name: model
          - platform: ollama
            name: local
        """,
    )

    assert problems_of(path) == [
        f"{path}:2: ai[0].platform: unknown platform 'fqa' (did you mean 'faq'?; available: {AVAILABLE})",
        f"{path}:4: ai[1].platform: unknown platform 'ollama' (available: {AVAILABLE})",
    ]


def test_missing_platform_and_missing_name_are_each_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        ai:
          - name: faq
          - platform: faq
            entries: [{language: en, questions: [hi], answer: hello}]
        """,
    )

    assert problems_of(path) == [
        f"{path}:2: ai[0]: required key 'platform' is missing (available: {AVAILABLE})",
        f"{path}:3: ai[1]: required key 'name' is missing",
    ]


def test_duplicate_names_point_at_both_entries(tmp_path: Path) -> None:
    entry = f"  - platform: faq\n    name: help\n{FAQ_ENTRY}"
    path = write(tmp_path, "config.yaml", f"ai:\n{entry}{entry}")

    [problem] = problems_of(path)

    assert problem.startswith(f"{path}:9: ai[1].name: AI backend name 'help' is already used by ai[0] (line 3)")


def test_a_misspelled_faq_key_is_suggested_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        ai:
          - platform: faq
            name: faq
            treshold: 70
            entries:
              - language: en
                questons: ["When are you open?"]
                answer: Every day.
        """,
    )

    assert problems_of(path) == [
        f"{path}:4: ai[0].treshold: unknown key 'treshold' (did you mean 'threshold'?)",
        f"{path}:6: ai[0].entries[0]: required key 'questions' is missing",
        f"{path}:7: ai[0].entries[0].questons: unknown key 'questons' (did you mean 'questions'?)",
    ]


def test_faq_entries_problems_are_located_even_in_an_included_file(tmp_path: Path) -> None:
    faq = write(
        tmp_path,
        "faq.yaml",
        """
        - id: hours
          language: en
          questions: ["When are you open?"]
          answer: Every day.
        - id: hours
          language: EN
          questions: ["Are you open?"]
          answer: Yes.
        - language: english
          questions: []
          answer: ""
        """,
    )
    path = write(tmp_path, "config.yaml", "ai:\n  - platform: faq\n    name: faq\n    entries: !include faq.yaml\n")

    problems = problems_of(path)

    assert problems == [
        f"{faq}:9: ai[0].entries[2].language: expected a language code such as en or pt-BR, got 'english'",
        f"{faq}:10: ai[0].entries[2].questions: expected a list of questions (at least one)",
        f"{faq}:11: ai[0].entries[2].answer: an answer cannot be empty, got ''",
    ]


def test_a_translation_twice_in_one_language_is_refused(tmp_path: Path) -> None:
    faq = write(
        tmp_path,
        "faq.yaml",
        """
        - id: hours
          language: en
          questions: ["When are you open?"]
          answer: Every day.
        - id: hours
          language: EN
          questions: ["Are you open?"]
          answer: Yes.
        """,
    )
    path = write(tmp_path, "config.yaml", "ai:\n  - platform: faq\n    name: faq\n    entries: !include faq.yaml\n")

    assert problems_of(path) == [
        f"{faq}:5: ai[0].entries[1].id: entry id 'hours' already has a en entry (entries[0]); "
        "entries sharing an id are translations, one per language"
    ]


def test_ai_problems_come_with_the_other_sections_problems_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          workers: 0
        ai:
          - platform: faq
            name: Bad Name
            scorer: fuzzy
            entries:
              - {language: en, questions: [hi], answer: hello}
        """,
    )

    assert problems_of(path) == [
        f"{path}:2: wahub.workers: expected an int between 1 and 64, got 0",
        f"{path}:5: ai[0].name: use lowercase letters, digits, '-' and '_', got 'Bad Name'",
        f"{path}:6: ai[0].scorer: unknown scorer 'fuzzy' (available: token_set_ratio, token_sort_ratio, "
        "partial_ratio, ratio, WRatio)",
    ]


def test_ai_must_be_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "ai:\n  platform: faq\n")

    assert problems_of(path) == [
        f"{path}:2: ai: expected a list of AI backend entries (for example `- platform: faq`), got a mapping"
    ]


async def test_the_example_configuration_answers_the_opening_hours_out_of_the_box(tmp_path: Path) -> None:
    config = load(REPO / "config.example.yaml")
    config["wahub"]["database"] = f"sqlite:///{tmp_path / 'wahub.db'}"
    config["wahub"]["media"]["directory"] = str(tmp_path / "media")

    [faq] = config["ai"]
    assert (faq["platform"], faq["name"]) == ("faq", "faq")
    async with running_daemon(config) as daemon:
        backend = daemon.hub.ai["faq"]
        assert backend.languages() == {"en", "ru", "pt", "es"}
        answer = await backend.reply(AIRequest(1, "15551234567", None, "en", ["what are your opening hours?"]))
    assert answer.text is not None and "Monday to Friday, 9:00 to 18:00" in answer.text


def test_two_plugins_registering_one_ai_platform_stop_start_up() -> None:
    class Impostor(FaqBackend):
        pass

    class Plugin:
        @hookimpl
        def register_ai_backends(self) -> list[type[AIBackend]]:
            return [Impostor]

    with pytest.raises(PluginError, match="two plugins register the ai_backend platform 'faq'"):
        check_registrations(plugin_manager([Plugin()]))


def _recording_plugin(events: list[str]) -> object:
    """A plugin registering the ``recording`` platform, whose backends note their start and stop in ``events``."""

    class RecordingBackend(AIBackend):
        PLATFORM = "recording"

        async def start(self) -> None:
            # Every backend exists before the first starts: one may lean on another.
            events.append(f"start {self.name} (knows {', '.join(sorted(self.host.ai))})")

        async def stop(self) -> None:
            events.append(f"stop {self.name}")

        async def reply(self, request: AIRequest) -> AIAnswer:
            return AIAnswer(text=f"{self.name} heard {len(request.messages)} message(s)")

    class Plugin:
        @hookimpl
        def register_ai_backends(self) -> list[type[AIBackend]]:
            return [RecordingBackend]

    return Plugin()


async def test_the_daemon_makes_every_backend_then_starts_them_and_stops_them_in_reverse(tmp_path: Path) -> None:
    events: list[str] = []
    pm = plugin_manager([_recording_plugin(events)])
    entries = [{"platform": "recording", "name": name} for name in ("one", "two")]
    config = build_config({"ai": entries}, database=f"sqlite:///{tmp_path / 'wahub.db'}", pm=pm)

    async with running_daemon(config, pm=pm) as daemon:
        assert list(daemon.hub.ai) == ["one", "two"]
        answer = await daemon.hub.ai["two"].reply(AIRequest(1, "15551234567", None, "en", ["hi"]))
        assert answer == AIAnswer(text="two heard 1 message(s)")
        started = list(events)

    assert started == ["start one (knows one, two)", "start two (knows one, two)"]
    assert events[2:] == ["stop two", "stop one"]


def test_names_of_other_entries_are_checked_with_the_rest(tmp_path: Path) -> None:
    faq = f"  - platform: faq\n    name: help\n{FAQ_ENTRY}"
    model = "  - platform: openai\n    name: assistant\n    model: m\n    knowledge: helps\n"
    path = write(tmp_path, "config.yaml", f"ai:\n{faq}{model}router:\n  fallback: asistant\n")

    assert problems_of(path) == [
        f"{path}:11: ai[1].knowledge: no faq entry of ai: is named 'helps' (faq entries: help)",
        f"{path}:13: router.fallback: no ai: entry is named 'asistant' (ai entries: assistant, help)",
    ]
    fixed = write(tmp_path, "config.yaml", f"ai:\n{faq}{model.replace('helps', 'help')}router:\n  fallback: help\n")
    assert load(fixed)["router"]["fallback"] == "help"
