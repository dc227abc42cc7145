"""Infobip's provider against the contract suite (tests/contract/infobip).

Infobip signs no webhook: it sends the HTTP Basic credentials set on the
webhook with every call, so the suite's signer adds them, encoded by aiohttp's
own ``BasicAuth`` as an independent client would."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from wahub.core.provider import Provider, WebhookRequest
from wahub.core.storage.contacts import ImportedContact
from wahub.plugins.providers.infobip.provider import InfobipProvider
from wahub.testing.contract import contract_tests

USER, PASSWORD = "wahub", "contract-webhook-password-0123"
#: A user known by number and by business-scoped id (BSUID).
PHONE, BSUID = "16505551234", "US.13491208655302741918"


def basic_credentials(request: WebhookRequest) -> Mapping[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}


async def known_user(provider: Provider) -> None:
    """Outbound and error cases run on storage: one user is known by both ids."""
    if hasattr(provider.hub, "storage"):
        await provider.hub.storage.contacts.import_contacts(provider.name, [ImportedContact(PHONE)], now=time.time())
        await provider.hub.storage.contacts.add_identity(provider.name, PHONE, "bsuid", BSUID)


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
    setup=known_user,
)
