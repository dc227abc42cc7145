"""Refreshing a provider's templates when a send names one wahub does not know.

A template created (or approved) at the provider since the last sync would
otherwise be refused as ``template_not_found`` until the next periodic sync.
So the send policy asks for a refresh first: at most one per provider every
``REFRESH_SECONDS``; sends that miss while one runs wait for it and share its
result instead of listing the templates again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from wahub.core.errors import ProviderError

_LOGGER = logging.getLogger(__name__)


class TemplateSource(Protocol):
    """What a template refresh needs of a provider (``wahub.core.provider.Provider`` has it)."""

    @property
    def name(self) -> str: ...

    async def sync_templates(self) -> dict[str, int] | None: ...


#: At most one refresh per provider in this many seconds.
REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Refresh:
    """The latest refresh of a provider's templates: when it began
    (``time.monotonic()``) and, when it failed, why."""

    started: float
    error: str | None = None

    def describe(self) -> str:
        """Why a refusal after this refresh can be trusted (or not), for its message."""
        if self.error is not None:
            return f"; refreshing the templates from the provider failed: {self.error}"
        ago = max(time.monotonic() - self.started, 0.0)
        return f"; the templates were refreshed from the provider {ago:.0f} s ago"


class TemplateRefresher:
    """Per provider: the latest refresh, and a lock that concurrent misses queue on."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._latest: dict[str, Refresh] = {}

    async def refresh(self, provider: TemplateSource) -> Refresh | None:
        """Refresh ``provider``'s stored templates unless that was done (or tried)
        in the last ``REFRESH_SECONDS``; the latest refresh, or None when the
        provider keeps no template list."""
        lock = self._locks.setdefault(provider.name, asyncio.Lock())
        async with lock:
            latest = self._latest.get(provider.name)
            if latest is not None and time.monotonic() - latest.started < REFRESH_SECONDS:
                return latest
            started = time.monotonic()
            try:
                counts = await provider.sync_templates()
            except ProviderError as exc:
                _LOGGER.warning("refreshing the templates of %s for a send failed: %s", provider.name, exc)
                latest = Refresh(started, str(exc))
            except Exception as exc:  # a broken listing must not fail every send, nor be listed again at once
                _LOGGER.exception("refreshing the templates of %s for a send failed", provider.name)
                latest = Refresh(started, f"{type(exc).__name__}: {exc}")
            else:
                if counts is None:
                    return None
                _LOGGER.info("templates of %s refreshed for a send naming an unknown one: %s", provider.name, counts)
                latest = Refresh(started)
            self._latest[provider.name] = latest
            return latest
