"""docs/choosing-a-provider.md: its feature table is what the installed providers'
CAPABILITIES give, and it compares the six providers on every criterion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wahub.core.canonical import capability_matrix
from wahub.core.canonical.fit import Capabilities
from wahub.core.plugins import build_plugin_manager, registered_providers

DOC = Path(__file__).parents[1] / "docs" / "choosing-a-provider.md"
REWRITE = "wahub providers --markdown docs/choosing-a-provider.md"
PROVIDERS = ("Meta Cloud API", "360dialog", "Twilio", "Infobip", "Vonage", "Bird")
CRITERIA = (
    "Cost and pricing model",
    "Features as wahub supports them",
    "Template management",
    "Interactive messages",
    "Webhook security",
    "Coverage and regions",
    "Documentation",
    "Going live",
)


def installed() -> dict[str, Capabilities]:
    return {platform: cls.CAPABILITIES for platform, cls in registered_providers(build_plugin_manager()).items()}


def section(title: str) -> str:
    text = DOC.read_text()
    assert f"\n## {title}\n" in text, f"{DOC.name} has no '## {title}' section"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_table_agrees_with_the_installed_providers() -> None:
    documented = capability_matrix.read_markdown(DOC.read_text())
    compared = {platform: caps for platform, caps in installed().items() if platform in documented}
    assert compared, f"the table of {DOC.name} has a column for none of the installed providers"
    problems = capability_matrix.differences(documented, compared)
    assert not problems, f"{DOC.name} disagrees with CAPABILITIES (run '{REWRITE}'):\n" + "\n".join(problems)


def test_every_built_in_provider_has_a_column() -> None:
    # Built-ins only: a plugin installed on this machine is not the document's to list.
    built_in = registered_providers(build_plugin_manager(load_entry_points=False))
    documented = capability_matrix.read_markdown(DOC.read_text())
    missing = sorted(set(built_in) - set(documented))
    assert not missing, f"{DOC.name} has no column for {', '.join(missing)}: run '{REWRITE}'"


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_compares_the_six_providers(criterion: str) -> None:
    text = section(criterion)
    absent = [name for name in PROVIDERS if name not in text]
    assert not absent, f"'{criterion}' of {DOC.name} says nothing of {', '.join(absent)}"


@pytest.mark.parametrize("criterion", [c for c in CRITERIA if c != "Features as wahub supports them"])
def test_facts_name_their_sources(criterion: str) -> None:
    assert re.search(r"\[[^][]+\](?!\()", section(criterion)), f"'{criterion}' cites no source"


def test_going_live_has_the_five_steps_for_each_provider() -> None:
    text = section("Going live")
    for provider in PROVIDERS:
        steps = text.split(f"### {provider}", 1)[1].split("\n### ", 1)[0]
        for step in ("Account", "Business verification", "number registration", "Webhook URL", "Profile"):
            assert step.lower() in steps.lower(), f"going live with {provider} lacks the step '{step}'"


def test_the_rewrite_command_is_documented_and_reproduces_the_table() -> None:
    text = DOC.read_text()
    assert f"```\n{REWRITE}\n```" in text
    documented = capability_matrix.read_markdown(text)
    shown = {platform: caps for platform, caps in installed().items() if platform in documented}
    if set(shown) == set(documented):  # every column is of an installed provider
        assert capability_matrix.replace_table(text, shown) == text
