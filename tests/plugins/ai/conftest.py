"""Fixtures of the OpenAI-compatible backend's tests: the fake model, a host, a backend maker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.plugins.ai.openai_helpers import KEY, NOW, Host, Make, make_backend
from wahub.testing import ManualClock
from wahub.testing.fake_openai import FakeOpenAIServer


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAIServer]:
    server = await FakeOpenAIServer(api_key=KEY).start()
    yield server
    await server.close()


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    async with aiohttp.ClientSession() as session:
        yield Host(session, ManualClock(NOW))


@pytest.fixture
def make(model: FakeOpenAIServer, host: Host) -> Make:
    """A started backend on the fake, with a ``faq`` knowledge backend when ``knowledge="faq"``."""
    return make_backend(model, host)
