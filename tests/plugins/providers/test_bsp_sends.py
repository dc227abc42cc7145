"""Every kind of message a provider declares in its CAPABILITIES, sent through
the daemon's REST API, reaches the provider's fake cloud and is accepted there;
files stored in wahub go out as signed links the fake fetches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import AUTH
from tests.plugins.providers.bsp_daemon import bsp_daemon
from tests.plugins.providers.test_bsp_engine import FAKES, USER, fake_for
from wahub.core.canonical.capability_matrix import sample

#: A small file of each media kind, as uploaded to ``POST /api/v1/media``.
FILES = {
    "image": ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 64),
    "video": ("clip.mp4", "video/mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64),
    "audio": ("note.ogg", "audio/ogg", b"OggS" + b"\x00" * 64),
    "document": ("menu.pdf", "application/pdf", b"%PDF-1.4\n" + b"\x00" * 64),
    "sticker": ("smile.webp", "image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64),
}
#: Kinds sent by other tests: templates need the provider's own template list.
ELSEWHERE = frozenset({"template", "interactive"})


@pytest.mark.parametrize("platform", sorted(FAKES))
async def test_every_declared_kind_reaches_the_fake_and_is_accepted(
    platform: str, sqlite_url: str, tmp_path: Path
) -> None:
    fake = fake_for(platform, statuses=False)

    def entries() -> list[dict[str, Any]]:
        return [fake.provider_entry("main", pair_limit=None, messages_per_second=None)]

    async with bsp_daemon(fake, sqlite_url, tmp_path, entries=entries, public_url=True) as running:
        daemon, http = running.daemon, running.http
        provider = daemon.hub.providers["main"]
        await running.user_writes("hello")
        [replied_to] = [row["provider_message_id"] for row in await running.history(USER) if row["direction"] == "in"]
        kinds = sorted(kind for kind in provider.CAPABILITIES.types if provider.CAPABILITIES.supports(kind))
        ids = {}
        for kind in kinds:
            if kind in ELSEWHERE:
                continue
            status, answer = await running.post_message(await _message(http, daemon.url, kind, replied_to))
            assert status == 202, (kind, answer)
            ids[kind] = answer["id"]
        for kind, message_id in ids.items():
            outcome = await running.status_becomes(message_id, "sent", "failed")
            assert outcome["status"] == "sent", (platform, kind, outcome)
    # One accepted message of each kind (a read receipt is not a message: it is a call of its own).
    expected = sorted(kind.partition(".")[0] for kind in ids if kind != "mark_read")
    assert sorted(sent.kind for sent in fake.sent) == expected
    if "mark_read" in ids:  # Vonage marks a message read with PATCH /v1/messages/{uuid}
        assert any(call.startswith("PATCH") for call in fake.calls), fake.calls


async def _message(http: aiohttp.ClientSession, url: str, kind: str, replied_to: str) -> dict[str, Any]:
    body = sample(kind).to_json()
    body["to"] = USER
    if kind in FILES:
        body[kind] = {**body[kind], "id": await _upload(http, url, kind)}
        del body[kind]["link"]
    if kind in ("reaction", "mark_read"):
        body[kind]["message_id"] = replied_to
    return body


async def _upload(http: aiohttp.ClientSession, url: str, kind: str) -> str:
    filename, mime_type, data = FILES[kind]
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=mime_type)
    async with http.post(f"{url}/api/v1/media", params={"provider": "main"}, data=form, headers=AUTH) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 201, (kind, answer)
        return str(answer["id"])
