"""Signed Meta Cloud API webhook requests, written once per run for every load generator.

The bodies have the shapes of ``tests/fixtures/cloud/`` (``text.json`` for a user's
message, ``status_sent.json``, ``status_delivered.json`` and ``status_read.json`` for
the statuses of a business reply), filled with fresh ids, senders and times. The
traffic is a conversation pattern: each user message is followed by the ``sent``,
``delivered`` and ``read`` statuses of a reply to that user, so one message in four
webhooks, as status webhooks dominate real Cloud API traffic.

A request file holds one request per line: ``<signature header value> TAB <raw body>``.
Bodies are one-line JSON (no tabs, no newlines), so a line needs no escaping and the
wrk Lua script can split it with one ``find``.
"""

from __future__ import annotations

import copy
import hmac
import json
import random
import secrets
import time
from pathlib import Path
from typing import Any

#: Meta's webhook signature header (HMAC-SHA256 of the raw body keyed with the app secret).
SIGNATURE_HEADER = "X-Hub-Signature-256"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cloud"
SENDER_COUNT = 1000
#: Webhooks per conversation step: the user's message, then its reply's three statuses.
STATUS_NAMES = ("sent", "delivered", "read")
SHARE_OF_MESSAGES = 1 / (1 + len(STATUS_NAMES))

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
    "Hi, I'd like to check the status of order {order}, thanks! I paid by card on Friday.",
    "Hello! My order {order} was supposed to arrive yesterday. Could you tell me where it is?",
    "Good morning, can I change the delivery address for order {order}? Thank you very much",
    "Is the blue jacket from your autumn collection still available in size M?",
    "I received order {order} today but one item is missing (the phone case). What should I do?",
    "Can I book an appointment for Thursday afternoon, ideally around 3 pm?",
)


def sign(secret: str, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def _value(body: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = body["entry"][0]["changes"][0]["value"]
    return value


class CloudBodies:
    """Cloud API webhook bodies in conversation order, every message and status unique."""

    def __init__(self, seed: int = 20251124) -> None:
        self._rng = random.Random(seed)
        self._senders = [f"1650{self._rng.randrange(10**7):07d}" for _ in range(SENDER_COUNT)]
        # A per-run nonce keeps ids unique even if a database were reused.
        self._nonce = secrets.token_hex(4)
        self._message = _fixture("text")
        self._statuses = {name: _fixture(f"status_{name}") for name in STATUS_NAMES}
        self._step = 0
        self._sender = 0
        self._reply_id = ""

    def body(self, key: str) -> bytes:
        """The next body of the pattern; ``key`` makes its ids unique within the run."""
        step, self._step = self._step, (self._step + 1) % (1 + len(STATUS_NAMES))
        now = int(time.time())
        if step == 0:
            self._sender = self._rng.randrange(SENDER_COUNT)
            self._reply_id = f"wamid.bench.out.{self._nonce}.{key}"
            return self.message(self._senders[self._sender], key, now=now)
        return self.status(STATUS_NAMES[step - 1], self._reply_id, self._senders[self._sender], now=now)

    def status(self, name: str, reply_id: str, recipient: str, *, now: int | None = None) -> bytes:
        """The ``name`` status (sent, delivered, read) of the reply ``reply_id`` to ``recipient``."""
        body = copy.deepcopy(self._statuses[name])
        status = _value(body)["statuses"][0]
        status.update(id=reply_id, timestamp=str(int(time.time()) if now is None else now), recipient_id=recipient)
        status.pop("recipient_user_id", None)
        return json.dumps(body, separators=(",", ":")).encode()

    def message(self, sender: str, key: str, *, now: int | None = None) -> bytes:
        """A text message from ``sender`` (digits), its id made unique by ``key``."""
        rng, now = self._rng, int(time.time()) if now is None else now
        body = copy.deepcopy(self._message)
        value = _value(body)
        value["contacts"][0].update(wa_id=sender, profile={"name": _NAMES[int(sender) % len(_NAMES)]})
        message = value["messages"][0]
        message.update(
            {"from": sender, "id": f"wamid.bench.in.{self._nonce}.{key}", "timestamp": str(now - rng.randrange(5))}
        )
        message["text"]["body"] = rng.choice(_TEXTS).format(order=rng.randrange(10000, 99999))
        return json.dumps(body, separators=(",", ":")).encode()


def write_request_files(
    directory: Path, phase: str, count: int, slices: int, secret: str, bodies: CloudBodies
) -> list[Path]:
    """Write ``count`` signed requests as ``slices`` files ``<phase>.<i>`` (one per wrk thread).

    Each slice gets its own ids, so no two load threads ever send the same event.
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
