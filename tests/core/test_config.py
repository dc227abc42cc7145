"""Loading and validating the configuration: tags, positions, and errors a person can act on."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol

from wahub.core.config.loader import load_yaml
from wahub.core.config.nodes import NodeDict, NodeList, NodeStr, Secret
from wahub.core.config.schema import (
    CORE_SCHEMA,
    ConfigError,
    ConfigProblem,
    default_config,
    load_config,
    validate_config,
)
from wahub.core.config.sections import DEFAULT_MAX_BYTES, DEFAULT_TYPES
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import PROVIDER_SCHEMA_BASE, Provider


class _TestProvider(Provider):
    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return True

    def parse_webhook(self, body: bytes) -> list[Event]:
        return []

    async def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(provider_message_id="validation-only")


class SandboxProvider(_TestProvider):
    PLATFORM = "sandbox"
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend({vol.Optional("business_number", default="15550000000"): str})


class CloudProvider(_TestProvider):
    PLATFORM = "meta_cloud"
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend(
        {
            vol.Required("access_token"): str,
            vol.Optional("timeout", default=10): vol.Coerce(float),
            vol.Optional("phone"): {vol.Required("number_id"): str, vol.Optional("display"): str},
        }
    )


PLATFORMS: dict[str, type] = {"sandbox": SandboxProvider, "meta_cloud": CloudProvider}
ROUTER_SCHEMA = vol.Schema(
    {
        vol.Optional("rules", default=list): [
            {vol.Required("match"): {vol.Optional("keyword"): str, vol.Optional("regex"): str}, "reply": str}
        ],
        vol.Optional("default_reply"): str,
    }
)
SECTIONS: dict[str, Any] = {"router": ROUTER_SCHEMA}


def write(directory: Path, name: str, text: str) -> Path:
    """Write ``text`` (dedented; line 1 is the line after the opening quotes) to ``directory/name``."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path) -> dict[str, Any]:
    return load_config(path, sections=SECTIONS, platforms=PLATFORMS)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(problem) for problem in caught.value.problems]


# --- the YAML loader ---------------------------------------------------------


def test_every_mapping_key_and_scalar_remembers_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          http:
            host: example.org

            port: 8080
        providers:
          - platform: sandbox
            name: sandbox
        """,
    )
    tree, problems = load_yaml(path)

    assert problems == []
    http = tree["wahub"]["http"]
    assert isinstance(http, NodeDict)
    assert (http.file, http.line) == (str(path), 3)
    assert http.key_marks["port"] == (str(path), 5)
    assert http.value_marks["port"] == (str(path), 5)
    assert isinstance(http["host"], NodeStr)
    assert (http["host"].file, http["host"].line) == (str(path), 3)
    providers = tree["providers"]
    assert isinstance(providers, NodeList)
    assert providers.item_marks[0] == (str(path), 7)
    assert tree["providers"][0].key_marks["name"].line == 8


def test_secret_reads_secrets_yaml_next_to_the_config(tmp_path: Path) -> None:
    write(tmp_path, "secrets.yaml", "api_token: s3cr3t-token-value-123\nport: 9090\n")
    path = write(tmp_path, "config.yaml", "token: !secret api_token\nport: !secret port\n")

    tree, problems = load_yaml(path)

    assert problems == []
    assert tree["token"] == "s3cr3t-token-value-123"
    assert isinstance(tree["token"], Secret)
    assert isinstance(tree["port"], Secret) and tree["port"] == "9090"
    assert "s3cr3t" not in repr(tree["token"]) and "s3cr3t" not in repr(tree)
    assert (tree["token"].file, tree["token"].line) == (str(path), 1)


def test_undefined_secret_is_a_problem_and_an_empty_secret(tmp_path: Path) -> None:
    write(tmp_path, "secrets.yaml", "other: value\n")
    path = write(tmp_path, "config.yaml", "wahub:\n  database: !secret db_url\n")

    tree, problems = load_yaml(path)

    assert tree["wahub"]["database"] == "" and isinstance(tree["wahub"]["database"], Secret)
    secrets = tmp_path / "secrets.yaml"
    assert [str(problem) for problem in problems] == [
        f"{path}:2: wahub.database: secret 'db_url' is not defined in {secrets}"
    ]


def test_secret_without_secrets_file_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "token: !secret api_token\n")

    _, problems = load_yaml(path)

    assert len(problems) == 1
    assert problems[0].message.startswith(f"secret 'api_token' is not defined in {tmp_path / 'secrets.yaml'}")


def test_env_var_value_default_and_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAHUB_TEST_HOST", "0.0.0.0")
    monkeypatch.delenv("WAHUB_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        "config.yaml",
        """
        host: !env_var WAHUB_TEST_HOST
        port: !env_var WAHUB_TEST_UNSET 8080
        token: !env_var WAHUB_TEST_UNSET
        """,
    )

    tree, problems = load_yaml(path)

    assert tree["host"] == "0.0.0.0" and isinstance(tree["host"], Secret)
    assert tree["port"] == "8080" and isinstance(tree["port"], Secret)
    assert tree["token"] == ""
    assert [str(problem) for problem in problems] == [
        f"{path}:3: token: environment variable 'WAHUB_TEST_UNSET' is not set and has no default"
    ]


def test_included_nodes_remember_their_own_file_and_line(tmp_path: Path) -> None:
    providers = write(
        tmp_path,
        "conf.d/providers.yaml",
        """
        # providers live here
        - platform: sandbox
          name: sandbox
        - platform: meta_cloud
          name: cloud
        """,
    )
    path = write(tmp_path, "config.yaml", "wahub: {}\nproviders: !include conf.d/providers.yaml\n")

    tree, problems = load_yaml(path)

    assert problems == []
    assert tree["providers"].file == str(providers)
    assert tree["providers"][1].line == 4
    assert tree["providers"][1].key_marks["name"] == (str(providers), 5)
    assert tree.value_marks["providers"] == (str(providers), 2)


def test_include_nested_secret_problem_names_the_included_file_and_full_path(tmp_path: Path) -> None:
    write(tmp_path, "secrets.yaml", "unused: x\n")
    included = write(tmp_path, "sub/http.yaml", "host: localhost\nport: !secret http_port\n")
    path = write(tmp_path, "config.yaml", "wahub:\n  http: !include sub/http.yaml\n")

    _, problems = load_yaml(path)

    assert [(p.file, p.line, p.path) for p in problems] == [(str(included), 2, "wahub.http.port")]


def test_missing_include_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "router: !include router.yaml\n")

    tree, problems = load_yaml(path)

    assert tree["router"] is None
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{path}:1: router: included file 'router.yaml' not found")


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "b: !include b.yaml\n")
    write(tmp_path, "b.yaml", "x: 1\na: !include a.yaml\n")

    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path / "a.yaml")

    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == (str(tmp_path / "b.yaml"), 2)
    assert problem.message.startswith("include cycle:")


def test_duplicate_key_is_an_error_with_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          workers: 2
          log_level: info
          workers: 8
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_yaml(path)

    assert str(caught.value) == f"{path}:4: key 'workers' appears twice (first at line 2)"


def test_duplicate_key_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    included = write(tmp_path, "http.yaml", "port: 1\nhost: a\nport: 2\n")
    path = write(tmp_path, "config.yaml", "wahub:\n  http: !include http.yaml\n")

    with pytest.raises(ConfigError) as caught:
        load_yaml(path)

    assert str(caught.value) == f"{included}:3: key 'port' appears twice (first at line 1)"


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        base: &base {platform: sandbox, name: one}
        copy:
          <<: *base
          name: two
        """,
    )

    tree, _ = load_yaml(path)

    assert tree["copy"] == {"platform": "sandbox", "name": "two"}


def test_invalid_yaml_without_a_hint_keeps_the_parser_message_and_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "wahub:\n  workers: *count\nproviders: []\n")

    with pytest.raises(ConfigError) as caught:
        load_yaml(path)

    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.column) == (str(path), 2, 12)
    assert str(problem) == f"{path}:2:12: invalid YAML: found undefined alias 'count'"


# --- validation ----------------------------------------------------------------


def test_acceptance_all_problems_at_once_with_lines_and_no_secret(tmp_path: Path) -> None:
    write(
        tmp_path,
        "secrets.yaml",
        """
        cloud_token: EAAG-very-secret-token-42
        db_password: hunter2-correct-horse
        """,
    )
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          http:
            port: abc
          workers: !secret db_password
          log_levle: debug
        providers:
          - platform: meta_cloud
            name: cloud
            access_token: !secret cloud_token
          - platform: meta_cloud
            access_token: !secret cloud_tokn
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load(path)

    secrets = tmp_path / "secrets.yaml"
    assert str(caught.value).splitlines() == [
        f"{path}:3: wahub.http.port: expected int, got 'abc'",
        f"{path}:4: wahub.workers: expected int, got ***",
        f"{path}:5: wahub.log_levle: unknown key 'log_levle' (did you mean 'log_level'?)",
        f"{path}:10: providers[1]: required key 'name' is missing",
        f"{path}:11: providers[1].access_token: secret 'cloud_tokn' is not defined in {secrets}",
    ]
    output = str(caught.value) + repr(caught.value.problems)
    assert "EAAG" not in output and "hunter2" not in output


def test_problem_str_with_and_without_line() -> None:
    assert str(ConfigProblem("c.yaml", 12, "wahub.http.port", "expected int")) == (
        "c.yaml:12: wahub.http.port: expected int"
    )
    assert str(ConfigProblem("c.yaml", None, "router", "required key 'rules' is missing")) == (
        "c.yaml: router: required key 'rules' is missing"
    )
    error = ConfigError([ConfigProblem("a", 1, "x", "one"), ConfigProblem("a", 2, "y", "two")])
    assert str(error) == "a:1: x: one\na:2: y: two"


def test_defaults_fill_in_when_no_file_is_given() -> None:
    config = default_config(sections=SECTIONS, platforms=PLATFORMS)

    assert config == {
        "wahub": {
            "http": {
                "host": "127.0.0.1",
                "port": 8080,
                "keepalive_timeout": 75.0,
                "read_timeout": 60.0,
                "max_connections": 500,
            },
            "database": "sqlite:///data/wahub.db",
            "api_tokens": [],
            "workers": 4,
            "inbox_stuck_after": 120,
            "log_level": "info",
            "media": {
                "directory": "data/media",
                "max_bytes": DEFAULT_MAX_BYTES,
                "types": DEFAULT_TYPES,
            },
            "language": "en",
            "languages": None,
            "templates_dir": "templates",
            "timezone": "UTC",
        },
        "providers": [
            {
                "platform": "sandbox",
                "name": "sandbox",
                "business_number": "15550000000",
                "messages_per_second": 80.0,
                "pair_limit": {"burst": 5, "every": 6.0},
                "retry_for": 86400.0,
            }
        ],
        "ai": [],
        "crm": [],
        "policy": {
            "service_window": {},
            "consent": {"keywords": True, "marketing_requires_opt_in": True, "languages": {}},
        },
        "conversations": {"debounce_seconds": 2.0, "return_to_bot_after": 43200.0},
        "router": {"rules": []},
    }
    assert isinstance(CORE_SCHEMA, vol.Schema)


def test_defaults_fill_in_around_what_the_file_sets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          http:
            port: 9000
          log_level: DEBUG
        router:
        providers:
          - platform: meta_cloud
            name: cloud
            access_token: token
        """,
    )

    config = load(path)

    assert config["wahub"]["http"] == {
        "host": "127.0.0.1",
        "port": 9000,
        "keepalive_timeout": 75.0,
        "read_timeout": 60.0,
        "max_connections": 500,
    }
    assert config["wahub"]["log_level"] == "debug"
    assert config["router"] == {"rules": []}
    [entry] = config["providers"]
    assert {key: entry[key] for key in ("platform", "name", "access_token", "timeout")} == {
        "platform": "meta_cloud",
        "name": "cloud",
        "access_token": "token",
        "timeout": 10,
    }
    assert entry["messages_per_second"] == 80 and entry["pair_limit"] == {"burst": 5, "every": 6.0}
    assert type(config["wahub"]) is dict and type(config["providers"]) is list


def test_empty_file_runs_on_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "# nothing yet\n")
    expected = default_config(sections=SECTIONS, platforms=PLATFORMS)
    expected["wahub"]["templates_dir"] = str(tmp_path / "templates")  # beside the file

    assert load(path) == expected


def test_env_var_port_is_coerced_to_int(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAHUB_TEST_PORT", "8443")
    monkeypatch.setenv("WAHUB_TEST_WORKERS", "many")
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          http:
            port: !env_var WAHUB_TEST_PORT
          workers: !env_var WAHUB_TEST_UNSET_WORKERS 8
        """,
    )
    monkeypatch.delenv("WAHUB_TEST_UNSET_WORKERS", raising=False)

    config = load(path)

    assert config["wahub"]["http"]["port"] == 8443
    assert config["wahub"]["workers"] == 8

    path.write_text("wahub:\n  workers: !env_var WAHUB_TEST_WORKERS\n", encoding="utf-8")
    assert problems_of(path) == [
        f"{path}:2: wahub.workers: expected int, got *** (from environment variable WAHUB_TEST_WORKERS)"
    ]


def test_out_of_range_values(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "wahub:\n  http: {port: 70000}\n  workers: 0\n")

    assert problems_of(path) == [
        f"{path}:2: wahub.http.port: expected an int between 1 and 65535, got 70000",
        f"{path}:3: wahub.workers: expected an int between 1 and 64, got 0",
    ]


def test_database_url_must_have_a_supported_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "wahub:\n  database: mysql://app:pa55word@db/wahub\n")

    [problem] = problems_of(path)

    assert problem.startswith(f"{path}:2: wahub.database: expected a database URL starting with sqlite:///")
    assert "postgresql://" in problem
    assert "pa55word" not in problem
    for good in ("sqlite:///data/x.db", "postgresql://u@h/d", "postgres://u@h/d"):
        path.write_text(f"wahub:\n  database: {good}\n", encoding="utf-8")
        assert load(path)["wahub"]["database"] == good


def test_short_api_token_says_why_and_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "wahub:\n  api_tokens:\n    - long-enough-token-0123\n    - shorty\n")

    [problem] = problems_of(path)

    assert problem.startswith(f"{path}:4: wahub.api_tokens[1]: API token is too short")
    assert "REST API" in problem and "16" in problem
    assert "shorty" not in problem


def test_a_load_problem_is_not_repeated_by_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "wahub:\n  api_tokens: [!secret api_token]\n")

    problems = problems_of(path)

    assert len(problems) == 1
    assert "secret 'api_token' is not defined" in problems[0]


def test_unknown_top_level_key_suggests_or_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "provider:\n  - platform: sandbox\nextras: 1\n")

    assert problems_of(path) == [
        f"{path}:1: provider: unknown key 'provider' (did you mean 'providers'?)",
        f"{path}:3: extras: unknown key 'extras' "
        "(allowed keys: ai, conversations, crm, policy, providers, router, wahub)",
    ]


def test_unknown_key_in_a_plugin_section_walks_its_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        router:
          rules:
            - match:
                regexp: 'order (\\d+)'
              reply: "Order {1}"
        """,
    )

    assert problems_of(path) == [
        f"{path}:4: router.rules[0].match.regexp: unknown key 'regexp' (did you mean 'regex'?)",
    ]


def test_wrong_type_in_a_plugin_section(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "router:\n  rules:\n    - match: {regex: [a]}\n      reply: hi\n")

    assert problems_of(path) == [f"{path}:3: router.rules[0].match.regex: expected str, got a list"]


def test_unknown_platform_suggests_and_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        providers:
          - platform: meta_clod
            name: a
          - platform: twilio
            name: b
          - name: c
        """,
    )

    assert problems_of(path) == [
        f"{path}:2: providers[0].platform: unknown platform 'meta_clod' "
        "(did you mean 'meta_cloud'?; available: meta_cloud, sandbox)",
        f"{path}:4: providers[1].platform: unknown platform 'twilio' (available: meta_cloud, sandbox)",
        f"{path}:6: providers[2]: required key 'platform' is missing (available: meta_cloud, sandbox)",
    ]


def test_provider_schema_errors_come_with_the_core_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          workers: lots
        providers:
          - platform: sandbox
            name: Shop Bot
          - platform: meta_cloud
            name: cloud
            timeout: soon
            phone:
              display: Shop
              numbre_id: "123"
          - platform: nope
            name: other
        """,
    )

    assert problems_of(path) == [
        f"{path}:2: wahub.workers: expected int, got 'lots'",
        f"{path}:5: providers[0].name: use lowercase letters, digits, '-' and '_', got 'Shop Bot'",
        f"{path}:6: providers[1]: required key 'access_token' is missing",
        f"{path}:8: providers[1].timeout: expected float, got 'soon'",
        f"{path}:10: providers[1].phone: required key 'number_id' is missing",
        f"{path}:11: providers[1].phone.numbre_id: unknown key 'numbre_id' (did you mean 'number_id'?)",
        f"{path}:12: providers[2].platform: unknown platform 'nope' (available: meta_cloud, sandbox)",
    ]


def test_provider_names_must_be_unique(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        providers:
          - platform: sandbox
            name: shop
          - platform: sandbox
            name: shop
        """,
    )

    [problem] = problems_of(path)

    assert problem.startswith(
        f"{path}:5: providers[1].name: provider name 'shop' is already used by providers[0] (line 3)"
    )


def test_at_least_one_provider(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "providers: []\n")

    [problem] = problems_of(path)

    assert problem.startswith(f"{path}:1: providers: at least one provider is required")


def test_problems_are_sorted_by_file_then_line(tmp_path: Path) -> None:
    write(tmp_path, "z_http.yaml", "port: x\n")
    write(tmp_path, "a_router.yaml", "rules: []\nfallback: hi\n")
    path = write(
        tmp_path,
        "config.yaml",
        """
        wahub:
          workers: 0
          http: !include z_http.yaml
        router: !include a_router.yaml
        """,
    )

    problems = problems_of(path)

    assert [problem.split(": ")[0] for problem in problems] == [
        f"{tmp_path / 'a_router.yaml'}:2",
        f"{path}:2",
        f"{tmp_path / 'z_http.yaml'}:1",
    ]


def test_missing_required_key_of_an_absent_section_has_no_line(tmp_path: Path) -> None:
    sections = {"shop": vol.Schema({vol.Required("url"): str})}
    path = write(tmp_path, "config.yaml", "wahub: {}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, sections=sections, platforms=PLATFORMS)

    assert str(caught.value) == f"{path}: shop: required key 'url' is missing"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert str(caught.value) == f"{path}: configuration file not found"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "- just\n- a list\n")

    [problem] = problems_of(path)

    assert problem.startswith(f"{path}:1: the configuration must be a mapping")


def test_validate_config_takes_plain_data() -> None:
    config = validate_config({"wahub": {"http": {"port": "8081"}}}, sections={}, platforms={"sandbox": SandboxProvider})

    assert config["wahub"]["http"]["port"] == 8081
    with pytest.raises(ConfigError) as caught:
        validate_config({"wahub": {"workers": 100}}, sections={}, platforms={"sandbox": SandboxProvider})
    assert str(caught.value) == "<embedded defaults>: wahub.workers: expected an int between 1 and 64, got 100"


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ConfigError, match="SQLite needs a file"):
        validate_config({"wahub": {"database": "sqlite:///:memory:"}}, sections={}, platforms=PLATFORMS)


def test_http_limits_are_checked_and_read_from_env_var_strings() -> None:
    platforms = {"sandbox": SandboxProvider}
    http = {"keepalive_timeout": "5", "read_timeout": 0.5, "max_connections": "20"}
    config = validate_config({"wahub": {"http": http}}, sections={}, platforms=platforms)
    limits = {key: config["wahub"]["http"][key] for key in http}
    assert limits == {"keepalive_timeout": 5.0, "read_timeout": 0.5, "max_connections": 20}
    bad = {"keepalive_timeout": "nan", "read_timeout": 0, "max_connections": 0}
    with pytest.raises(ConfigError) as caught:
        validate_config({"wahub": {"http": bad}}, sections={}, platforms=platforms)
    text = str(caught.value)
    assert "wahub.http.keepalive_timeout: expected a number of seconds between 0.05 and 86400" in text
    assert "wahub.http.read_timeout: expected a number of seconds between 0.05 and 86400" in text
    assert "wahub.http.max_connections: expected an int between 1 and 1000000" in text
