"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

from yarl import URL

#: The API token the tests' daemons accept, and the header that carries it.
TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def install_plugin(site: Path, name: str, source: str) -> Path:
    """Install module ``name`` with a ``wahub`` entry point into ``site``, as pip would."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[wahub]\n{name} = {name}\n")
    return site


async def post_raw(address: str, header: bytes, body: bytes) -> tuple[int, Any]:
    """POST a JSON ``body`` to ``address`` with one extra header line written byte for
    byte (aiohttp's client only writes UTF-8); returns the status and the JSON answer."""
    url = URL(address)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
        length = f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
        writer.write(head.encode() + header + b"\r\n" + length + b"\r\n" + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def inbox_row(external_id: str, contact: str = "sandbox:1555") -> dict[str, object]:
    """An inbox row of a message event with an empty payload, as ``Storage.insert_inbox`` takes it."""
    return {"provider": "sandbox", "external_id": external_id, "kind": "message", "contact_key": contact, "payload": {}}
