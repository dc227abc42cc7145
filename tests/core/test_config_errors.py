"""Configuration errors a person can act on: YAML slips in plain words, !env_var values named, platforms suggested."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import voluptuous as vol

from wahub.core.config.schema import load_config
from wahub.core.errors import ConfigError, ConfigProblem
from wahub.plugins.providers.sandbox.provider import SandboxProvider

PLATFORMS: dict[str, type] = {"sandbox": SandboxProvider, "meta_cloud": SandboxProvider}
SECTIONS = {"router": vol.Schema({vol.Optional("default_reply"): str})}


def write(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, sections=SECTIONS, platforms=PLATFORMS)
    return caught.value.problems


def only_message(path: Path) -> str:
    [problem] = problems_of(path)
    assert problem.file == str(path)
    return str(problem)


# --- YAML syntax ----------------------------------------------------------------


def test_tab_used_for_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  http:\n  \tport: 8080\n")

    assert only_message(path) == (
        f"{path}:3:3: a tab character is used for indentation here: YAML indents with spaces only"
    )


def test_key_less_indented_than_its_siblings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        wahub:
          http:
            port: 8080
           host: 0.0.0.0
        """,
    )

    [problem] = problems_of(path)

    assert (problem.line, problem.column) == (4, 4)
    assert str(problem) == (
        f"{path}:4:4: the indentation here does not match the lines above (a key must line up with its siblings)"
    )


def test_first_key_indented_and_a_later_one_not(tmp_path: Path) -> None:
    path = write(tmp_path, "#wahub:\n  workers: 4\nrouter:\n  default_reply: Sorry\n")

    assert only_message(path) == (
        f"{path}:3:1: the indentation here does not match the lines above (a key must line up with its siblings)"
    )


def test_key_more_indented_than_the_key_above_it(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  workers: 4\n    log_level: info\n")

    assert only_message(path) == (
        f"{path}:3:5: this line is indented deeper than the key above it, which already has a value "
        "(a key must line up with its siblings)"
    )


def test_key_without_its_colon_before_another_key(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  workers 4\n  log_level: info\n")

    assert only_message(path) == f"{path}:2:3: 'workers 4' has no colon: write a key as 'key: value'"


def test_key_without_its_colon_at_the_end_of_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  workers: 4\n  log_level info\nproviders:\n  - platform: sandbox\n")

    assert only_message(path) == f"{path}:3:3: 'log_level info' has no colon: write a key as 'key: value'"


def test_colon_without_a_space(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  workers:4\n  log_level: info\n")

    assert only_message(path) == f"{path}:2:10: a colon after a key must be followed by a space ('key: value')"


def test_value_with_colon_and_space_needs_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, "router:\n  default_reply: Note: we are closed\n")

    assert only_message(path) == (
        f"{path}:2:22: this value contains ': ', which YAML reads as a new key: put the value in quotes"
    )


@pytest.mark.parametrize("quote", ['"', "'"])
def test_unclosed_quote_points_where_it_opens(tmp_path: Path, quote: str) -> None:
    path = write(tmp_path, f"wahub:\n  database: {quote}sqlite:///data/wahub.db\n  workers: 4\n")

    assert only_message(path) == (
        f"{path}:2:13: the quote {quote} opened here is never closed: end the value with {quote}"
    )


def test_unclosed_bracket_points_where_it_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  api_tokens: [0123456789abcdef0123\nproviders: []\n")

    assert only_message(path) == (
        f"{path}:2:15: the [ opened here is never closed: end the list with ] (or a comma is missing between its items)"
    )


def test_unclosed_brace_points_where_it_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n  http: {port: 8080\nproviders: []\n")

    assert only_message(path) == (
        f"{path}:2:9: the {{ opened here is never closed: end the mapping with }} "
        "(or a comma is missing between its items)"
    )


def test_stray_list_item_among_the_keys_of_a_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          - platform: sandbox
            name: sandbox
            - business_number: "15550000000"
        """,
    )

    assert only_message(path) == (
        f'{path}:4:5: a list item ("- ") cannot stand among the keys of a mapping: '
        'remove the "- ", or put the list under a key of its own'
    )


def test_no_hint_is_made_up_for_a_line_that_has_its_colon(tmp_path: Path) -> None:
    path = write(tmp_path, "wahub:\n[  http:\n    port: 8080\n")

    assert only_message(path) == (
        f"{path}:3:5: invalid YAML: could not find expected ':' (while scanning a simple key at line 2)"
    )


def test_syntax_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    included = tmp_path / "providers.yaml"
    included.write_text("- platform: sandbox\n\tname: sandbox\n", encoding="utf-8")
    path = write(tmp_path, "providers: !include providers.yaml\n")

    [problem] = problems_of(path)

    assert str(problem) == (
        f"{included}:2:1: a tab character is used for indentation here: YAML indents with spaces only"
    )


# --- values from !env_var --------------------------------------------------------


def test_env_var_value_that_fails_names_the_variable_and_hides_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAHUB_TOKEN", "short-s3cret")
    monkeypatch.setenv("WAHUB_PORT", "eighty")
    path = write(
        tmp_path,
        """
        wahub:
          http:
            port: !env_var WAHUB_PORT
          api_tokens:
            - !env_var WAHUB_TOKEN
        """,
    )

    problems = [str(problem) for problem in problems_of(path)]

    assert problems == [
        f"{path}:3: wahub.http.port: expected int, got *** (from environment variable WAHUB_PORT)",
        f"{path}:5: wahub.api_tokens[0]: API token is too short: tokens guard the REST API, so use at least "
        "16 random characters (e.g. the output of `openssl rand -hex 32`) (from environment variable WAHUB_TOKEN)",
    ]
    assert "eighty" not in "\n".join(problems) and "s3cret" not in "\n".join(problems)


def test_env_var_default_that_fails_says_the_variable_is_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAHUB_TEST_UNSET_WORKERS", raising=False)
    path = write(tmp_path, "wahub:\n  workers: !env_var WAHUB_TEST_UNSET_WORKERS 900\n")

    assert only_message(path) == (
        f"{path}:2: wahub.workers: expected an int between 1 and 64, got *** "
        "(the default of !env_var WAHUB_TEST_UNSET_WORKERS, which is not set)"
    )


def test_secret_value_that_fails_stays_masked_and_unnamed(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("workers: many-workers\n", encoding="utf-8")
    path = write(tmp_path, "wahub:\n  workers: !secret workers\n")

    assert only_message(path) == f"{path}:2: wahub.workers: expected int, got ***"


# --- platforms --------------------------------------------------------------------


def test_misspelled_platform_key_suggests_platform(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          - name: sandbox
            platfrom: sandbox
          - platform: sandbox
            name: other
        """,
    )

    assert only_message(path) == f"{path}:3: providers[0].platfrom: unknown key 'platfrom' (did you mean 'platform'?)"


def test_entry_without_anything_like_platform_still_says_it_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  - name: sandbox\n")

    assert only_message(path) == (
        f"{path}:2: providers[0]: required key 'platform' is missing (available: meta_cloud, sandbox)"
    )


def test_misspelled_platform_value_suggests_a_registered_platform(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          - platform: mta
            name: one
          - platform: Sandbox
            name: two
        """,
    )

    assert [str(problem) for problem in problems_of(path)] == [
        f"{path}:2: providers[0].platform: unknown platform 'mta' "
        "(did you mean 'meta_cloud'?; available: meta_cloud, sandbox)",
        f"{path}:4: providers[1].platform: unknown platform 'Sandbox' "
        "(did you mean 'sandbox'?; available: meta_cloud, sandbox)",
    ]


def test_provider_durations_refuse_nan_and_booleans_with_the_range(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          - platform: sandbox
            name: sandbox
            retry_for: .nan
            pair_limit: {every: true}
        """,
    )

    assert [str(problem) for problem in problems_of(path)] == [
        f"{path}:4: providers[0].retry_for: expected a number between 1 and 2592000, got nan",
        f"{path}:5: providers[0].pair_limit.every: expected a number, got True",
    ]
