"""Signed links to stored files, for providers that fetch what they send by
URL: they open only the outbound file they name, only until they expire, and
every replica on one database signs and checks them with the same key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wahub.core.config.sections import MEDIA_SCHEMA
from wahub.core.http.proxies import called_url, trusted_networks
from wahub.core.storage.media import PUBLIC_MEDIA_PATH
from wahub.core.storage.store import Storage


@pytest.fixture
async def storage(database_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    opened = await Storage.open(database_url, media=MEDIA_SCHEMA({"directory": str(tmp_path / "media")}))
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_link_opens_its_outbound_file_until_it_expires(
    storage: Storage, database_url: str, tmp_path: Path
) -> None:
    media = storage.media
    sent = await media.save("main", "image", b"\xff\xd8\xff" + b"1" * 32, "image/jpeg", direction="out")
    received = await media.save("main", "image", b"\xff\xd8\xff" + b"2" * 32, "image/jpeg", direction="in")
    now = time.time()
    path = await media.public_path(sent, ttl=60, now=now)
    assert path.startswith(PUBLIC_MEDIA_PATH)
    token = path[len(PUBLIC_MEDIA_PATH) :]
    assert await media.public_file(token, now=now) == sent
    assert await media.public_file(token, now=now + 61) is None  # expired
    file_id, expires, signature = token.split(".")
    assert await media.public_file(f"{file_id}.{int(expires) + 3600}.{signature}", now=now) is None  # lengthened
    assert await media.public_file(f"{received.id}.{expires}.{signature}", now=now) is None  # another file
    assert await media.public_file(f"{file_id}.{expires}.{'A' * len(signature)}", now=now) is None  # forged
    assert await media.public_file("../../etc/passwd", now=now) is None
    # A file a user sent never gets a working link, even one signed with the key.
    inbound_token = (await media.public_path(received, ttl=60, now=now))[len(PUBLIC_MEDIA_PATH) :]
    assert await media.public_file(inbound_token, now=now) is None


@pytest.mark.postgres
async def test_every_replica_signs_and_checks_links_with_one_key(postgres_url: str, tmp_path: Path) -> None:
    media = MEDIA_SCHEMA({"directory": str(tmp_path / "media")})
    first, second = await Storage.open(postgres_url, media=media), await Storage.open(postgres_url, media=media)
    try:
        sent = await first.media.save("main", "image", b"\xff\xd8\xff" + b"3" * 32, "image/jpeg", direction="out")
        token = (await first.media.public_path(sent, ttl=60))[len(PUBLIC_MEDIA_PATH) :]
        assert await second.media.public_file(token) == sent
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("seen", "headers", "peer", "base", "called"),
    [
        # public_base_url wins, prefix and all; no header is read.
        (
            "http://127.0.0.1:8080/webhooks/tw?a=1",
            {"X-Forwarded-Host": "evil.example"},
            "10.0.0.2",
            "https://hooks.example.com/wa",
            "https://hooks.example.com/wa/webhooks/tw?a=1",
        ),
        # A trusted proxy's forwarding headers, the nearest value of each.
        (
            "http://127.0.0.1:8080/webhooks/tw",
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a.example, hooks.example.com",
                "X-Forwarded-Prefix": "hub",
            },
            "10.0.0.2",
            None,
            "https://hooks.example.com/hub/webhooks/tw",
        ),
        # From anyone else the request's own URL is the one called.
        (
            "http://127.0.0.1:8080/webhooks/tw",
            {"X-Forwarded-Host": "hooks.example.com"},
            "192.0.2.7",
            None,
            "http://127.0.0.1:8080/webhooks/tw",
        ),
        (
            "http://127.0.0.1:8080/webhooks/tw",
            {"X-Forwarded-Host": "hooks.example.com"},
            None,
            None,
            "http://127.0.0.1:8080/webhooks/tw",
        ),
    ],
)
def test_the_called_url_believes_only_configuration_and_trusted_proxies(
    seen: str, headers: dict[str, str], peer: str | None, base: str | None, called: str
) -> None:
    trusted = trusted_networks(["10.0.0.0/8"])
    assert called_url(seen, headers, peer, public_base_url=base, trusted=trusted) == called
