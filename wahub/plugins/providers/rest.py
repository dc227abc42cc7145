"""The HTTP calls the REST providers share: one JSON request, and one streamed download.

Each provider keeps what is its own (the URL, the credentials, how its error
bodies read, which hosts get the credentials); these carry out the request,
turn an HTTP failure into the provider's ``ProviderError`` and a network
failure into a retryable one, and stop a download that is over the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from wahub.core.errors import MediaTooLarge, ProviderError
from wahub.core.storage.media import IncomingFile

ErrorOf = Callable[[int, Any], ProviderError]
"""A provider's error from an HTTP status and the answer's JSON (None when it had none)."""

MediaCheck = Callable[[str, str, int | None], None]
"""``MediaLibrary.check``: refuse a file by its kind, MIME type and announced size."""

_CHUNK = 1 << 16


async def json_or_none(response: aiohttp.ClientResponse) -> Any:
    """The answer's JSON, whatever its Content-Type; None when it is empty or not JSON."""
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


async def request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    error_of: ErrorOf,
    provider: str,
    client_timeout: aiohttp.ClientTimeout,
    headers: Mapping[str, str] | None = None,
    **body: Any,
) -> Any:
    """One request; its JSON answer (None when it has none), ``error_of(status, answer)``
    for a status of 400 or more, or a retryable ``ProviderError`` naming ``provider``
    when no answer comes. ``body`` goes to aiohttp as it is (``json``, ``data``, ``params``)."""
    try:
        async with http.request(method, url, headers=headers, timeout=client_timeout, **body) as response:
            answer = await json_or_none(response)
            if response.status >= 400:
                raise error_of(response.status, answer)
            return answer
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderError(f"no answer from {provider}: {exc!r}", code="network", retryable=True) from exc


async def stream_media(
    http: aiohttp.ClientSession,
    url: str,
    *,
    kind: str,
    into: IncomingFile,
    error_of: ErrorOf,
    client_timeout: aiohttp.ClientTimeout,
    headers: Mapping[str, str] | None = None,
    check: MediaCheck | None = None,
) -> str:
    """GET ``url`` and write its body into ``into``; its MIME type. With ``check``, the
    type and the announced size are checked before a byte is kept; a Content-Length
    over ``into``'s limit is refused at once, and ``into`` stops a longer body itself."""
    try:
        async with http.get(url, headers=headers or {}, timeout=client_timeout) as response:
            if response.status >= 400:
                raise error_of(response.status, await json_or_none(response))
            mime_type = response.content_type or "application/octet-stream"
            if check is not None:
                check(kind, mime_type, response.content_length)
            if (response.content_length or 0) > into.limit:
                raise MediaTooLarge(
                    f"{kind} of {response.content_length} bytes is over the limit of {into.limit} bytes"
                )
            async for chunk in response.content.iter_chunked(_CHUNK):
                await into.write(chunk)  # refused, and the download stopped, past the limit
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderError(f"media download failed: {exc!r}", code="network", retryable=True) from exc
    return mime_type
