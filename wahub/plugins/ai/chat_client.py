"""One Chat Completions call, retried on 429, 5xx, time-outs and lost connections,
all within the time the turn has.

Retries back off (0.25 s, 0.5 s, 1 s... at most 4 s, with jitter); a 429's
``Retry-After`` is honoured when it fits the time left, and when it does not
the call fails at once rather than answer after the turn's time. Any other
answer than 200 (400, 401, 404...) fails at once: retrying would not help.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["ChatClient", "ModelFailed"]

_LOGGER = logging.getLogger(__name__)

FIRST_BACKOFF = 0.25
MAX_BACKOFF = 4.0


class ModelFailed(Exception):
    """The model gave no usable answer; ``why`` is a short code (``timeout``,
    ``http_429``, ``http_503``, ``connection_error``, ``invalid_response``...)."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(f"{why}: {detail}" if detail else why)
        self.why = why


@dataclass(frozen=True)
class _Outcome:
    """What one attempt got: a body, or why it failed, whether to try again, and how soon."""

    body: dict[str, Any] | None = None
    why: str = ""
    retry: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class ChatClient:
    """Posts to ``<base_url>/chat/completions`` through the daemon's HTTP session."""

    session: aiohttp.ClientSession
    base_url: str
    api_key: str | None = None
    #: For log lines: the backend's name.
    name: str = "openai"

    async def complete(self, payload: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        """The completion answering ``payload``, retried until ``deadline`` (the
        event loop's clock); raises ``ModelFailed`` with the last reason."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise ModelFailed("timeout", "no time left for the model")
            outcome = await self._attempt(payload, left)
            if outcome.body is not None:
                return outcome.body
            if not outcome.retry:
                raise ModelFailed(outcome.why)
            wait = _backoff(attempt) if outcome.retry_after is None else outcome.retry_after
            if loop.time() + wait >= deadline:
                raise ModelFailed(outcome.why, "no time left to try again")
            _LOGGER.info("ai %s: %s, trying again in %.2f s", self.name, outcome.why, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def _attempt(self, payload: Mapping[str, Any], left: float) -> _Outcome:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with self.session.post(
                f"{self.base_url}/chat/completions",
                json=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=left),
            ) as response:
                if response.status == 200:
                    return _completion(await response.read())
                why = f"http_{response.status}"
                _LOGGER.warning("ai %s: the model answered HTTP %d", self.name, response.status)
                if response.status == 429:
                    return _Outcome(why=why, retry=True, retry_after=_retry_after(response.headers))
                return _Outcome(why=why, retry=response.status >= 500)
        except TimeoutError:
            return _Outcome(why="timeout", retry=True)
        except aiohttp.ClientError as exc:
            _LOGGER.warning("ai %s: the model could not be reached (%s)", self.name, type(exc).__name__)
            return _Outcome(why="connection_error", retry=True)


def _completion(raw: bytes) -> _Outcome:
    """A 200's body if it is a completion with a message, else an ``invalid_response`` not retried."""
    try:
        body = json.loads(raw)
    except ValueError:
        return _Outcome(why="invalid_response")
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return _Outcome(why="invalid_response")
    if not isinstance(choices[0].get("message"), dict):
        return _Outcome(why="invalid_response")
    return _Outcome(body=body)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (OpenAI sends seconds), or None if absent or unreadable."""
    try:
        seconds = float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _backoff(attempt: int) -> float:
    # Jitter spreads the retries of replicas that failed together.
    jitter = random.uniform(0.8, 1.2)
    return min(FIRST_BACKOFF * 2.0**attempt, MAX_BACKOFF) * jitter
