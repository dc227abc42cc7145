"""The media store on a real database and a real directory: files arrive in
chunks into a temporary file, are hashed as they come, stop at the size limit
and get their final name only once checked."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wahub.core.config.sections import MEDIA_SCHEMA
from wahub.core.errors import MediaRefused, MediaTooLarge
from wahub.core.storage.media import FLUSH_BYTES, INCOMING
from wahub.core.storage.store import Storage

LIMIT = 3 * FLUSH_BYTES + 10


@pytest.fixture
async def storage(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    media = MEDIA_SCHEMA({"directory": str(tmp_path / "media"), "max_bytes": {"document": LIMIT}})
    store = await Storage.open(sqlite_url, media=media)
    yield store
    await store.close()


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def blocks(count: int, size: int = 200_000) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


async def test_a_file_written_in_chunks_is_kept_under_its_sha256(storage: Storage, tmp_path: Path) -> None:
    store, chunks = storage.media, blocks(12)  # 2.4 MB: several flushes to disk
    whole = b"".join(chunks)
    async with store.incoming("document") as incoming:
        for chunk in chunks:
            await incoming.write(chunk)
        announced = base64.b64encode(hashlib.sha256(whole).digest()).decode()
        file = await store.keep(
            incoming, "main", "application/pdf", direction="in", provider_media_id="m1", expected_sha256=announced
        )

    digest = hashlib.sha256(whole).hexdigest()
    assert (file.sha256, file.size, file.path) == (digest, len(whole), f"{digest[:2]}/{digest}.pdf")
    assert store.path(file).read_bytes() == whole
    assert files_under(tmp_path / "media") == [store.path(file)]  # no temporary file left
    assert await store.find("main", "m1") == file


async def test_a_file_past_the_limit_is_stopped_there_and_nothing_is_left(storage: Storage, tmp_path: Path) -> None:
    store, written = storage.media, 0
    with pytest.raises(MediaTooLarge, match=f"document is over the limit of {LIMIT} bytes"):
        async with store.incoming("document") as incoming:
            for chunk in blocks(100):  # 20 MB offered; refused at the limit
                await incoming.write(chunk)
                written += len(chunk)
    assert written <= LIMIT and incoming.size <= LIMIT
    assert files_under(tmp_path / "media") == []


async def test_a_damaged_or_refused_file_gets_no_name_and_no_row(storage: Storage, tmp_path: Path) -> None:
    store = storage.media
    with pytest.raises(MediaRefused, match="does not match its announced sha256"):
        async with store.incoming("document") as incoming:
            await incoming.write(b"%PDF-1.4 the bytes that came")
            await store.keep(
                incoming, "main", "application/pdf", direction="in", provider_media_id="m2", expected_sha256="0" * 64
            )
    with pytest.raises(MediaRefused, match="'image/gif' is not accepted"):
        async with store.incoming("image") as incoming:
            await incoming.write(b"GIF89a")
            await store.keep(incoming, "main", "image/gif", direction="out")
    with pytest.raises(MediaRefused, match="'voice' is not a media type"):
        store.incoming("voice")
    assert files_under(tmp_path / "media") == []
    assert await store.find("main", "m2") is None


async def test_the_same_bytes_are_stored_once(storage: Storage, tmp_path: Path) -> None:
    store = storage.media
    first = await store.save("main", "document", b"%PDF-1.4 terms", "application/pdf", direction="out")
    second = await store.save("main", "document", b"%PDF-1.4 terms", "application/pdf", direction="out")
    assert first.id != second.id and first.path == second.path
    assert files_under(tmp_path / "media") == [store.path(first)]


async def test_partial_files_a_crash_left_are_removed_an_hour_later(storage: Storage, tmp_path: Path) -> None:
    incoming_dir = tmp_path / "media" / INCOMING
    incoming_dir.mkdir(parents=True)
    stale, recent = incoming_dir / "dead.part", incoming_dir / "writing.part"
    stale.write_bytes(b"half a file")
    recent.write_bytes(b"another process is writing this")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))

    file = await storage.media.save("main", "document", b"next file", "text/plain", direction="out")

    assert files_under(tmp_path / "media") == sorted([storage.media.path(file), recent])


async def test_an_empty_file_is_kept_and_a_file_that_never_came_touches_no_disk(
    storage: Storage, tmp_path: Path
) -> None:
    store = storage.media
    async with store.incoming("document") as incoming:
        empty = await store.keep(incoming, "main", "text/plain", direction="in", provider_media_id="m3")
    assert empty.size == 0 and store.path(empty).read_bytes() == b""
    with pytest.raises(ConnectionResetError):
        async with store.incoming("document") as incoming:
            raise ConnectionResetError("the provider hung up before the first byte")
    assert files_under(tmp_path / "media") == [store.path(empty)]
    with pytest.raises(RuntimeError, match="inside `async with`"):
        await incoming.write(b"late bytes")
