"""Bird's provider against the contract suite (tests/contract/bird). The
suite's signer is written here from Bird's documentation, apart from the
provider's own code: HMAC-SHA256 with the signing key over the timestamp, the
URL and the body's raw SHA-256 digest, base64."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from pathlib import Path

from wahub.core.provider import WebhookRequest
from wahub.plugins.providers.bird.provider import BirdProvider
from wahub.testing.contract import contract_tests

SIGNING_KEY = "contract-signing-key-0123"
WORKSPACE, CHANNEL = "2d7f1d2c-5b7e-4c51-9c35-1f4b5e6a7b8c", "8a3c9f10-4e21-4b9a-a0c2-7d5e6f708192"
#: Every send goes to the channel's messages endpoint with the access key.
SEND = {
    "method": "POST",
    "path": f"/workspaces/{WORKSPACE}/channels/{CHANNEL}/messages",
    "headers": {"Authorization": "AccessKey contract-access-key-0123", "Content-Type": "application/json"},
}


def bird_signer(request: WebhookRequest) -> Mapping[str, str]:
    """Bird's headers for the request, at its given timestamp if the case sets one, else now."""
    timestamp = request.headers.get("messagebird-request-timestamp") or str(int(time.time()))
    message = timestamp.encode() + b"\n" + request.url.encode() + b"\n" + hashlib.sha256(request.body).digest()
    signature = base64.b64encode(hmac.new(SIGNING_KEY.encode(), message, hashlib.sha256).digest()).decode()
    return {"messagebird-request-timestamp": timestamp, "messagebird-signature": signature}


test_bird = contract_tests(
    BirdProvider,
    fixtures=Path(__file__).parent / "bird",
    config={
        "platform": "bird",
        "name": "main",
        "workspace_id": WORKSPACE,
        "channel_id": CHANNEL,
        "access_key": "contract-access-key-0123",
        "signing_key": SIGNING_KEY,
        "public_base_url": "https://hooks.example.com",
        "templates": [
            {
                "name": "order_ready",
                "language": "en_US",
                "project_id": "0d6f3e2a-7b1c-4a9e-8f5d-3c2b1a0f9e8d",
                "version": "5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b",
            }
        ],
    },
    base_url_key="api_base",
    signer=bird_signer,
    defaults={"outbound": {"request": SEND}},
)
