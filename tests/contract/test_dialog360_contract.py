"""360dialog's provider against the contract suite (tests/contract/dialog360);
its request bodies are Meta's, checked against Meta's OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from wahub.plugins.providers.cloud.dialog360 import Dialog360Provider
from wahub.testing.contract import contract_tests
from wahub.testing.fake_graph_schema import request_problems

test_dialog360 = contract_tests(
    Dialog360Provider,
    fixtures=[
        Path(__file__).parent / "dialog360",
        Path(__file__).parent / "cloud" / "outbound.yaml",
        Path(__file__).parent / "cloud" / "inbound_echoes.yaml",
    ],
    config={
        "platform": "dialog360",
        "name": "main",
        "phone_number_id": "106540352242922",
        "waba_id": "102290129340398",
        "api_key": "contract-d360-key-0123",
        "webhook_secret": "contract-webhook-secret-0123",
    },
    base_url_key="api_base",
    check_request=request_problems,
    # The shared Cloud API bodies go to this provider's messages endpoint.
    defaults={"outbound": {"request": {"method": "POST", "path": "/messages"}}},
)
