"""Signed sandbox webhook requests, written once per run for every load generator.

A request file holds one request per line: ``<signature header value> TAB <raw body>``.
Bodies are one-line JSON (no tabs, no newlines), so a line needs no escaping and the
wrk Lua script can split it with one ``find``.
"""

from __future__ import annotations

import hmac
import json
import random
import secrets
import time
from pathlib import Path

SIGNATURE_HEADER = "X-Wahub-Signature-256"
BUSINESS_NUMBER = "15550000000"
SENDER_COUNT = 1000

_NAMES = (
    "Alice Example",
    "Bruno Silva",
    "Chen Wei",
    "Dana Kowalski",
    "Emeka Obi",
    "Fatima Zahra",
    "Giulia Romano",
    "Hiro Tanaka",
    "Ines Duarte",
    "Jonas Berg",
)
_TEXTS = (
    (
        "Hi, I'd like to check the status of order {order}, thanks! I paid by card on Friday "
        "and got the confirmation email, but nothing since then. Could you have a look?"
    ),
    (
        "Hello! My order {order} was supposed to arrive yesterday but the tracking page has "
        "not changed since Monday. Could you tell me where it is and when I can expect it? Thanks"
    ),
    (
        "Good morning, can I change the delivery address for order {order}? I will be at my "
        "office at 12 Harbour Street instead of home this week. Thank you very much, Sam"
    ),
    (
        "Is the blue jacket from your autumn collection still available in size M? If so, "
        "please reserve one for me and send me the payment link. I can pick it up in the shop "
        "on Saturday morning if that is easier."
    ),
    (
        "I received order {order} today but one item is missing (the phone case). The box "
        "was sealed. What should I do to get it sent? I can send a photo of the packing slip!"
    ),
    (
        "Can I book an appointment for Thursday afternoon, ideally around 3 pm? It is for a "
        "repair of the device I bought last month, order {order}. The screen flickers when "
        "the battery is below 20%."
    ),
)


def sign(secret: str, body: bytes) -> str:
    """Return the ``X-Wahub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


class SandboxBodies:
    """Realistic inbound sandbox message bodies, each with a unique message id."""

    def __init__(self, seed: int = 20251124) -> None:
        self._rng = random.Random(seed)
        self._senders = [f"1555{self._rng.randrange(10**7):07d}" for _ in range(SENDER_COUNT)]
        # A per-run nonce keeps ids unique even if a database were reused.
        self._nonce = secrets.token_hex(4)

    def body(self, key: str) -> bytes:
        """A JSON body whose single message event has the id ``sbx.in.<nonce>.<key>``."""
        rng = self._rng
        sender = rng.randrange(SENDER_COUNT)
        text = rng.choice(_TEXTS).format(order=rng.randrange(10000, 99999))
        event = {
            "type": "message",
            "id": f"sbx.in.{self._nonce}.{key}",
            "from": self._senders[sender],
            "name": _NAMES[sender % len(_NAMES)],
            "timestamp": int(time.time()) - rng.randrange(5),
            "message": {"type": "text", "text": {"body": text}},
        }
        payload = {"object": "wahub_sandbox", "business_number": BUSINESS_NUMBER, "events": [event]}
        return json.dumps(payload).encode()


def write_request_files(
    directory: Path, phase: str, count: int, slices: int, secret: str, bodies: SandboxBodies
) -> list[Path]:
    """Write ``count`` signed requests as ``slices`` files ``<phase>.<i>`` (one per wrk thread).

    Each slice gets its own ids, so no two load threads ever send the same message.
    """
    directory.mkdir(parents=True, exist_ok=True)
    per_slice = -(-count // slices)
    paths = []
    for index in range(slices):
        path = directory / f"{phase}.{index}"
        lines = []
        for seq in range(per_slice):
            body = bodies.body(f"{phase}{index}.{seq}")
            lines.append(sign(secret, body).encode() + b"\t" + body + b"\n")
        path.write_bytes(b"".join(lines))
        paths.append(path)
    return paths


def read_request_files(paths: list[Path]) -> list[tuple[str, bytes]]:
    """Load request files back as ``(signature, body)`` pairs (for the Python generator)."""
    requests = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            signature, _, body = line.partition(b"\t")
            requests.append((signature.decode(), body))
    return requests
