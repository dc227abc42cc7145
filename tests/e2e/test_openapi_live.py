"""The OpenAPI document against the daemon it describes: schemathesis generates
requests for every operation from the document itself, sends them to a live
``wahub run`` process, and checks each answer: never a 5xx, a status code,
content type and body the document gives for that operation.

A conversation with a reply exists before (ids 1 of contact, conversation and
messages), and the document gives examples (id 1, the sandbox contact, a
text message), so the generated requests also reach the answers of things
that exist. ``GET /api/v1/openapi.json`` itself is checked by
``tests/core/test_openapi.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.helpers import AUTH, TOKEN
from wahub.testing import TEST_SECRET, sandbox_message, signed_sandbox_webhook

#: Generated requests per operation: enough to reach each answer, a few seconds each.
EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

CONFIG = f"""
wahub:
  http: {{port: !env_var WAHUB_PORT}}
  database: sqlite:///data/wahub.db
  log_level: warning
  api_tokens: [{TOKEN}]
providers:
  - platform: sandbox
    name: sandbox
    secret: {TEST_SECRET}
router:
  default_reply: Thanks, we will answer soon.
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("openapi")
    (home / "config.yaml").write_text(CONFIG)
    running = start_daemon(home / "config.yaml", home, free_port())
    try:
        running.wait_healthy(within=30.0)
        body, headers = signed_sandbox_webhook([sandbox_message("hello")])
        request = urllib.request.Request(f"{running.url}/webhooks/sandbox", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        yield running
    finally:
        assert running.terminate() == 0, running.log.read_text()


def _fuzz(operation: Any, url: str) -> Callable[[], None]:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=url, headers=AUTH, checks=CHECKS, timeout=10)

    return run


def test_every_operation_answers_as_the_document_says(daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json")
    problems, tried = [], set()
    for result in schema.get_all_operations():
        operation = result.ok()
        tried.add((operation.method.upper(), operation.path))
        try:
            _fuzz(operation, daemon.url)()
        except Exception as exc:  # noqa: BLE001 - every operation's failures are reported together
            problems.append(f"{operation.method.upper()} {operation.path}:\n{exc}")
    # Every operation but the document itself, which schemathesis leaves out (it read it already).
    described = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items() for method in item}
    assert tried == described - {("GET", "/api/v1/openapi.json")}
    assert not problems, "\n\n".join(problems) + "\n\n" + daemon.log.read_text()[-4000:]


def test_the_document_and_its_page_need_no_token(daemon: Daemon) -> None:
    with urllib.request.urlopen(f"{daemon.url}/api/v1/openapi.json", timeout=10) as answer:
        described = json.load(answer)
    assert described["openapi"] == "3.1.0"
    with urllib.request.urlopen(f"{daemon.url}/api/v1/docs", timeout=10) as answer:
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert b"/api-docs/api-docs.js" in answer.read()
    for path in ("/api/v1/status", "/api/v1/openapi.json/", "/api/v1/docs/x"):
        try:
            urllib.request.urlopen(f"{daemon.url}{path}", timeout=10)
        except urllib.error.HTTPError as refused:
            assert refused.code in (401, 404), path
            assert json.load(refused)["error"]["code"] in ("unauthorized", "not_found"), path
        else:
            raise AssertionError(f"{path} answered without a token")
