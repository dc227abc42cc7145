"""A 100 MB document through the daemon as a process, never whole in its memory.

The daemon runs as ``wahub run`` (a subprocess, so only its own memory is
measured) against the fake Graph API in this process. The document goes
every way a file goes: uploaded with ``POST /api/v1/media``, sent (the
provider uploads it to the API), received from a user (the daemon downloads
it) and served back by ``GET /api/v1/media/{id}``; its sha256 is checked at
each end.

Memory is the kernel's high-water mark of the daemon's resident set
(``VmHWM`` in ``/proc/<pid>/status``): read once after start-up and a warm-up
transfer of a small file along the same paths (so imports, thread pools and
buffers that every transfer needs already count), and again after the big
one. Holding the document once would raise it by 100 MB; streaming keeps the
growth to the buffers in flight (a few megabytes), far under 20 MB.

A daemon killed in the middle of an upload leaves only its partial file in
``.incoming/``: nothing under a final name a message could point at.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.daemon import Daemon, free_port, start_daemon
from tests.helpers import AUTH, TOKEN
from wahub.testing import wait_until
from wahub.testing.fake_graph import FakeGraphServer, MediaItem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status (Linux)")

USER = "16505551234"
MB = 1024 * 1024
#: The largest document the Cloud API takes, and wahub's default limit for one.
DOCUMENT_BYTES = 100 * MB
GROWTH_LIMIT = 20 * MB


def peak_rss(pid: int) -> int:
    """The process's resident-set high-water mark, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def write_document(path: Path, size: int) -> str:
    """A file of ``size`` bytes made of random 1 MB blocks; returns its sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for offset in range(0, size, MB):
            block = os.urandom(min(MB, size - offset))
            digest.update(block)
            file.write(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(MB):
            digest.update(block)
    return digest.hexdigest()


def _remove_documents(tmp_path: Path) -> None:
    """pytest keeps the last runs' directories: of this one, only the log and the database stay."""
    shutil.rmtree(tmp_path / "data" / "media", ignore_errors=True)
    for document in tmp_path.glob("*.pdf"):
        document.unlink()


class Run:
    """The daemon process, the fake Graph API it talks to, and an HTTP client."""

    def __init__(self, daemon: Daemon, graph: FakeGraphServer, http: aiohttp.ClientSession, db: Path) -> None:
        self.daemon, self.graph, self.http, self.db = daemon, graph, http, db

    async def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as file:  # a file object: aiohttp sends it in chunks
            form = aiohttp.FormData()
            form.add_field("file", file, filename=path.name, content_type="application/pdf")
            async with self.http.post(f"{self.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
                answer: dict[str, Any] = await response.json()
                assert response.status == 201, answer
                return answer

    async def send_document(self, media_id: str, filename: str) -> MediaItem:
        """Send the stored file to the user; returns what the fake Graph API holds for it."""
        body = {"to": USER, "type": "document", "document": {"id": media_id, "filename": filename}}
        async with self.http.post(f"{self.daemon.url}/api/v1/messages", json=body, headers=AUTH) as response:
            queued = await response.json()
            assert response.status == 202, queued

        async def sent() -> dict[str, Any] | None:
            url = f"{self.daemon.url}/api/v1/messages/{queued['id']}"
            async with self.http.get(url, headers=AUTH) as response:
                message: dict[str, Any] = await response.json()
            assert message["status"] != "failed", message
            return message if message["status"] in ("sent", "delivered", "read") else None

        await wait_until(sent, within=60, every=0.2)
        return self.graph.media[self.graph.messages[-1]["document"]["id"]]

    async def receive_document(self, path: Path, sha256: str) -> dict[str, Any]:
        """A user sends the file; returns the ``wahub_media`` note of the stored message."""
        media_id = self.graph.add_media(path, "application/pdf")
        announced = base64.b64encode(bytes.fromhex(sha256)).decode()  # webhooks say base64
        wamid = f"wamid.in.{path.name}"
        document = {"id": media_id, "mime_type": "application/pdf", "sha256": announced, "filename": path.name}
        assert await self.graph.send_inbound({"id": wamid, "type": "document", "document": document}) == 200

        async def kept() -> dict[str, Any] | None:
            with sqlite3.connect(self.db) as conn:
                found = conn.execute("SELECT body FROM messages WHERE provider_message_id = ?", (wamid,)).fetchone()
            note: dict[str, Any] | None = json.loads(found[0])["document"]["wahub_media"] if found else None
            return note

        note: dict[str, Any] = await wait_until(kept, within=60, every=0.2)
        return note

    async def fetch(self, url: str, into: Path) -> None:
        async with self.http.get(f"{self.daemon.url}{url}", headers=AUTH) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "application/pdf"
            with into.open("wb") as file:
                async for chunk in response.content.iter_chunked(MB):
                    file.write(chunk)

    async def round_trip(self, path: Path, sha256: str, size: int) -> None:
        """The file every way a file goes, checked at each end. The user sends it
        first, which also opens the 24-hour window for sending it back."""
        note = await self.receive_document(path, sha256)
        assert (note.get("sha256"), note.get("size")) == (sha256, size), note
        served = path.with_name(f"served-{path.name}")
        await self.fetch(note["url"], served)
        assert file_sha256(served) == sha256
        served.unlink()
        uploaded = await self.upload(path)
        assert (uploaded["sha256"], uploaded["size"]) == (sha256, size)
        at_the_api = await self.send_document(uploaded["id"], path.name)
        assert (at_the_api.sha256, at_the_api.size) == (sha256, size)


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    graph = await FakeGraphServer().start()
    port = free_port()
    config = {
        "wahub": {
            "http": {"port": port},
            "database": "sqlite:///data/wahub.db",
            "api_tokens": [TOKEN],
            "log_level": "warning",
            "media": {"directory": "data/media"},
        },
        "providers": [graph.provider_entry("main", pair_limit=None)],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, port)
    try:
        await asyncio.to_thread(daemon.wait_healthy, 20.0)
        graph.attach(daemon.url, "main")
        async with aiohttp.ClientSession() as http:
            yield Run(daemon, graph, http, tmp_path / "data" / "wahub.db")
    finally:
        try:
            code = 0 if daemon.process.poll() == -signal.SIGKILL else await asyncio.to_thread(daemon.terminate, 15.0)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise
        finally:
            await graph.close()
            await asyncio.to_thread(_remove_documents, tmp_path)
    assert code == 0, daemon.log.read_text()


async def test_a_100_mb_document_goes_through_the_daemon_in_chunks(run: Run, tmp_path: Path) -> None:
    small, big = tmp_path / "warm-up.pdf", tmp_path / "catalogue.pdf"
    small_sha256, big_sha256 = write_document(small, 256 * 1024), write_document(big, DOCUMENT_BYTES)
    await run.round_trip(small, small_sha256, 256 * 1024)
    before = peak_rss(run.daemon.process.pid)

    await run.round_trip(big, big_sha256, DOCUMENT_BYTES)

    growth = peak_rss(run.daemon.process.pid) - before
    assert growth < GROWTH_LIMIT, f"the daemon's peak RSS grew by {growth / MB:.1f} MB (from {before / MB:.1f} MB)"
    stored = [path for path in (tmp_path / "data" / "media").rglob("*") if path.is_file()]
    assert sorted(path.stat().st_size for path in stored) == [256 * 1024, DOCUMENT_BYTES]  # each kept once


async def test_a_daemon_killed_mid_upload_leaves_no_file_under_a_final_name(run: Run, tmp_path: Path) -> None:
    incoming = tmp_path / "data" / "media" / ".incoming"

    async def partial_size() -> int:
        parts = list(incoming.glob("*.part")) if incoming.is_dir() else []
        return sum(part.stat().st_size for part in parts)

    async def document() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield os.urandom(MB)
        await wait_until(partial_size, within=20)  # the daemon is writing it to disk
        run.daemon.process.kill()  # SIGKILL: nothing is cleaned up
        for _ in range(8):
            yield os.urandom(MB)

    form = aiohttp.FormData()
    form.add_field("file", document(), filename="cut.pdf", content_type="application/pdf")
    with pytest.raises(aiohttp.ClientError):
        async with run.http.post(f"{run.daemon.url}/api/v1/media", data=form, headers=AUTH) as response:
            await response.read()

    assert await asyncio.to_thread(run.daemon.process.wait, 10) == -signal.SIGKILL
    left = [path.relative_to(tmp_path / "data" / "media") for path in (tmp_path / "data" / "media").rglob("*")]
    assert left and all(path.parts[0] == ".incoming" for path in left), left  # only the partial file
