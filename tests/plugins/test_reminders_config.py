"""The ``reminders:`` section: defaults, and mistakes reported at their YAML line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from wahub.core.config.schema import load_config
from wahub.core.errors import ConfigError
from wahub.core.http.notification_schemas import PARAMETERS
from wahub.core.plugins import registered_providers, registered_sections
from wahub.plugins.reminders import _parameters
from wahub.testing import plugin_manager


def load(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    pm = plugin_manager()
    return load_config(path, sections=registered_sections(pm), platforms=registered_providers(pm))


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [str(problem) for problem in caught.value.problems]


def test_defaults_and_the_core_time_zone(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        wahub:
          timezone: America/Sao_Paulo
        reminders:
          - name: digest
            cron: "0 9 * * mon"
            template: weekly_digest
            to: {tags: [newsletter]}
        """,
    )
    assert config["wahub"]["timezone"] == "America/Sao_Paulo"  # type: ignore[index]
    assert config["reminders"] == [
        {
            "name": "digest",
            "cron": "0 9 * * mon",
            "template": "weekly_digest",
            "to": {"tags": ["newsletter"]},
            "timezone": None,
            "language": None,
            "parameters": None,
            "provider": None,
            "misfire_grace": 3600.0,
        }
    ]
    assert load(tmp_path, "wahub: {}\n")["reminders"] == []


def test_a_bad_cron_zone_audience_or_provider_names_its_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        reminders:
          - name: digest
            cron: "0 25 * * mon"
            template: weekly_digest
            to: ["15551230001"]
          - name: other
            cron: "0 9 * * *"
            timezone: Europe/Lisbn
            template: t
            to: {labels: [x]}
            provider: whatsapp
        """,
    )
    path = tmp_path / "config.yaml"
    assert any(f"{path}:3" in text and "reminders[0].cron" in text and "hour field has 25" in text for text in found), (
        found
    )
    assert any(f"{path}:8" in text and "unknown time zone 'Europe/Lisbn'" in text for text in found), found
    assert any(f"{path}:10" in text and "reminders[1].to" in text for text in found), found


def test_names_are_unique_and_providers_exist(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        reminders:
          - {name: digest, cron: "0 9 * * *", template: t, to: ["1"]}
          - {name: digest, cron: "0 9 * * *", template: t, to: ["1"], provider: whatsapp}
        """,
    )
    path = tmp_path / "config.yaml"
    assert any(f"{path}:3" in text and "already used by reminders[0]" in text for text in found), found
    assert any(f"{path}:3" in text and "no provider is named 'whatsapp'" in text for text in found), found


def test_parameters_have_the_shape_of_a_notifications(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        reminders:
          - name: a
            cron: "0 9 * * *"
            template: t
            to: ["1"]
            parameters:
              "1": [not, a, text]
              Bad Name: x
              header: {image: https://x.example/a.png}
              buttons: {"12": go}
          - name: b
            cron: "0 9 * * *"
            template: t
            to: ["1"]
            parameters: just text
        """,
    )
    path = tmp_path / "config.yaml"
    assert any(
        f"{path}:7" in text and "reminders[0].parameters.1" in text and "a number or a text" in text for text in found
    ), found
    assert any(f"{path}:8" in text and "'Bad Name' is not a parameter name" in text for text in found), found
    assert any(f"{path}:9" in text and "parameters.header.image" in text for text in found), found
    assert any(f"{path}:10" in text and "'12' is not a button index" in text for text in found), found
    assert any(f"{path}:15" in text and "reminders[1].parameters" in text and '"1", "2"' in text for text in found), (
        found
    )


def test_well_formed_parameters_are_kept(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        reminders:
          - name: a
            cron: "0 9 * * *"
            template: t
            to: ["1"]
            parameters:
              "1": Ana
              "2": 42
              order_id: A-7
              header: {image: {link: "https://x.example/a.png"}}
              buttons: {"0": track-7}
        """,
    )
    assert config["reminders"][0]["parameters"] == {  # type: ignore[index]
        "1": "Ana",
        "2": 42,
        "order_id": "A-7",
        "header": {"image": {"link": "https://x.example/a.png"}},
        "buttons": {"0": "track-7"},
    }


@pytest.mark.parametrize(
    "parameters",
    [
        {"1": "Ana", "2": 42},
        {"order_id": "A-17", "header": "Order A-17", "buttons": {"0": "track/A-17"}},
        {"header": {"image": {"link": "https://x.example/a.png"}}},
        {"1": ""},
        {"1": True},
        {"Bad Name": "x"},
        {"header": 5},
        {"header": {}},
        {"header": {"image": "https://x.example/a.png"}},
        {"header": {"audio": {"link": "https://x.example/a.ogg"}}},
        {"buttons": ["a"]},
        {"buttons": {"x": "1"}},
        {"buttons": {"12": "go"}},
        {"buttons": {"0": ""}},
    ],
)
def test_a_reminders_parameters_are_read_as_the_rest_api_reads_a_notifications(parameters: dict[str, Any]) -> None:
    """The section checks the YAML with its own messages; it must accept exactly what the REST API's schema does."""
    api_accepts = Draft202012Validator(PARAMETERS).is_valid(parameters)
    try:
        _parameters(parameters)
    except vol.Invalid:
        section_accepts = False
    else:
        section_accepts = True
    assert section_accepts == api_accepts
