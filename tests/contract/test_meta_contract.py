"""Meta's Cloud API provider against the contract suite (tests/contract/meta and
the Cloud API bodies it shares with 360dialog, tests/contract/cloud);
its request bodies are checked against Meta's OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from wahub.plugins.providers.cloud.meta import MetaCloudProvider
from wahub.testing.contract import contract_tests
from wahub.testing.fake_graph_schema import request_problems

test_meta_cloud = contract_tests(
    MetaCloudProvider,
    fixtures=[
        Path(__file__).parent / "meta",
        Path(__file__).parent / "cloud" / "outbound.yaml",
        Path(__file__).parent / "cloud" / "inbound_echoes.yaml",
    ],
    config={
        "platform": "meta_cloud",
        "name": "main",
        "phone_number_id": "106540352242922",
        "waba_id": "102290129340398",
        "access_token": "contract-token-0123",
        "app_secret": "contract-app-secret-0123",
        "verify_token": "contract-verify-token",
    },
    base_url_key="api_base",
    check_request=request_problems,
    # The shared Cloud API bodies go to this provider's messages endpoint.
    defaults={"outbound": {"request": {"method": "POST", "path": "/v23.0/106540352242922/messages"}}},
)
