"""Infobip's provider against the contract suite (tests/contract/infobip).

Infobip signs no webhook: it sends the HTTP Basic credentials set on the
webhook with every call, so the suite's signer adds them, encoded by aiohttp's
own ``BasicAuth`` as an independent client would."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aiohttp

from wahub.core.provider import WebhookRequest
from wahub.plugins.providers.infobip.provider import InfobipProvider
from wahub.testing.contract import contract_tests

USER, PASSWORD = "wahub", "contract-webhook-password-0123"


def basic_credentials(request: WebhookRequest) -> Mapping[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}


test_infobip = contract_tests(
    InfobipProvider,
    fixtures=Path(__file__).parent / "infobip",
    config={
        "platform": "infobip",
        "name": "main",
        "base_url": "https://abc123.api.infobip.com",
        "api_key": "contract-infobip-key-0123",
        "sender": "447860099299",
        "webhook_username": USER,
        "webhook_password": PASSWORD,
        "public_base_url": "https://hooks.example.com/wahub",
    },
    base_url_key="base_url",
    signer=basic_credentials,
)
