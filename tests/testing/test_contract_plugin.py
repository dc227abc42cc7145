"""The contract suite's pytest plugin, run by pytest itself (pytester): it is
loaded through its ``pytest11`` entry point, makes one test per case, and a
wrong fixture fails its case with a message naming the case and the difference."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _plugin_author_ini(pytester: pytest.Pytester) -> None:
    """A plugin author's settings: pytest-asyncio is installed beside wahub."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


SANDBOX_SUITE = """
from pathlib import Path

from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing.contract import contract_tests
from wahub.testing.contract_capture import sandbox_frames

test_sandbox = contract_tests(
    SandboxProvider,
    fixtures=Path(__file__).parent / "contract",
    config={"platform": "sandbox", "name": "sandbox", "secret": "plugin-test-secret-0123"},
    capture=sandbox_frames,
)
"""

META_SUITE = """
from pathlib import Path

from wahub.plugins.providers.cloud.meta import MetaCloudProvider
from wahub.testing.contract import contract_tests
from wahub.testing.fake_graph_schema import request_problems

test_meta = contract_tests(
    MetaCloudProvider,
    fixtures=Path(__file__).parent / "contract",
    config={"platform": "meta_cloud", "name": "main", "phone_number_id": "1", "waba_id": "2",
            "access_token": "t", "app_secret": "s", "verify_token": "v"},
    base_url_key="api_base",
    check_request=request_problems,
)
"""

SANDBOX_CASES = """
defaults:
  inbound:
    sign: {header: X-Wahub-Signature-256, secret: plugin-test-secret-0123}
inbound:
  - name: right-text
    body: {object: wahub_sandbox, events: [{type: message, id: m1, from: "15551234567", timestamp: 1,
           message: {type: text, text: {body: hi}}}]}
    events: [{kind: message, text: hi, sender: "15551234567"}]
  - name: wrong-text
    body: {object: wahub_sandbox, events: [{type: message, id: m2, from: "15551234567", timestamp: 1,
           message: {type: text, text: {body: hi}}}]}
    events: [{kind: message, text: bye, sender: "15551234567"}]
  - name: one-event-too-many
    body: {object: wahub_sandbox, events: []}
    events: [{kind: status}]
  - name: a-field-no-event-has
    body: {object: wahub_sandbox, events: [{type: preference, id: p1, user: "15551234567", value: stop,
           timestamp: 1}]}
    events: [{kind: preference, colour: blue}]
errors:
  - name: wrong-meaning
    message: {to: "15551234567", type: template, template: {name: missing, language: {code: en}}}
    meaning: {kind: retryable, code: "132001"}
"""


def _entry_points() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group="pytest11")}


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    assert _entry_points().get("wahub_contract") == "wahub.testing.pytest_plugin"


def test_a_wrong_fixture_fails_its_case_with_the_difference(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sandbox_contract=SANDBOX_SUITE)
    (pytester.path / "contract").mkdir()
    (pytester.path / "contract" / "cases.yaml").write_text(SANDBOX_CASES)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", "-W", "error", "-v")

    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines(["*test_sandbox?inbound/right-text? PASSED*"])
    output = result.stdout.str()
    assert "SandboxProvider inbound/wrong-text (" in output and "cases.yaml" in output
    assert '[0].text: expected "bye", got "hi"' in output
    assert "all public fields of the parsed events:" in output
    assert ": expected 1 items, got 0" in output
    assert '[0].colour: expected "blue", got "<PreferenceEvent has no colour>"' in output
    assert '.kind: expected "retryable", got "permanent"' in output
    assert "Traceback" not in output


def test_a_request_outside_metas_schema_fails_its_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_meta_contract=META_SUITE)
    (pytester.path / "contract").mkdir()
    long_text = "x" * 4097
    (pytester.path / "contract" / "outbound.yaml").write_text(
        f"""
outbound:
  - name: too-long
    message: {{to: "16505551234", type: text, text: {{body: {long_text}}}}}
    answer: {{json: {{messages: [{{id: wamid.A}}]}}}}
    request: {{method: POST, path: /v23.0/1/messages}}
  - name: wrong-path
    message: {{to: "16505551234", type: text, text: {{body: hi}}}}
    answer: {{json: {{messages: [{{id: wamid.A}}]}}}}
    request: {{method: POST, path: /v23.0/1/message}}
"""
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")

    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "refused by the suite's check_request" in output and "$.text.body" in output
    assert '[0].path: expected "/v23.0/1/message", got "/v23.0/1/messages"' in output


def test_a_fixture_file_out_of_format_fails_the_collection_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sandbox_contract=SANDBOX_SUITE)
    (pytester.path / "contract").mkdir()
    (pytester.path / "contract" / "cases.yaml").write_text("inbound:\n  - name: no-body\n    events: []\n")

    result = pytester.runpytest("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*contract fixtures of SandboxProvider:*cases.yaml: inbound case no-body:*"])
    assert "give the webhook as body, body_file, body_text or body_form" in result.stdout.str()


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.provider_contract(suite):*"])
