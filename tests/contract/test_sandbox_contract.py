"""The sandbox provider against the contract suite (tests/contract/sandbox); it
sends over its chat socket, so a capture records what it pushes there."""

from __future__ import annotations

from pathlib import Path

from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing.contract import contract_tests
from wahub.testing.contract_capture import sandbox_frames

test_sandbox = contract_tests(
    SandboxProvider,
    fixtures=Path(__file__).parent / "sandbox",
    config={
        "platform": "sandbox",
        "name": "sandbox",
        "secret": "contract-sandbox-secret-0123",
        "templates": [{"name": "order_ready", "text": "Order {{1}} is ready"}],
    },
    capture=sandbox_frames,
)
