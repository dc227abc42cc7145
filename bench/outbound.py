"""Outbound benchmark: sends per second through the dispatcher to the fake provider.

    python -m bench.outbound [--messages 3000] [--paced 400] [--json out.json]

Three measurements in one run, against the same fake provider cloud
(``wahub.testing.fake_provider``) on a real socket:

(a) baseline: a bare aiohttp client posting the same bodies with 64 requests in
    flight, the ceiling of this machine for the fake's HTTP round trips;
(b) wahub, pacing off: messages queued in the outbox (SQLite), sent by the
    dispatcher, each recorded with its provider id; from their common due time
    to the last one stored as sent;
(c) wahub, paced at 80/s: the rate the fake provider saw, first call to last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from bench.report import Target, target_line
from wahub.core.models import InboundMessage, OutgoingMessage
from wahub.core.storage.schema import messages
from wahub.testing import build_config, plugin_manager, running_daemon
from wahub.testing import fake_provider as fake_plugin
from wahub.testing.fake_provider import FakeProviderServer

#: wahub unpaced against the bare client: at least as fast (the goal: faster, through batching).
UNPACED_RATIO_TARGET, UNPACED_RATIO_GOAL = 1.0, 1.3
PACED_RATE, PACED_TOLERANCE = 80.0, 0.02
RECIPIENTS = 200


@dataclass
class Result:
    baseline_per_second: float
    unpaced_per_second: float
    paced_per_second: float


async def baseline(server: FakeProviderServer, count: int) -> float:
    semaphore = asyncio.Semaphore(64)
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession() as http:

        async def one(n: int) -> None:
            body = {"messaging_product": "whatsapp", "to": f"1555{n % RECIPIENTS:07d}", "type": "text"}
            async with semaphore, http.post(f"{server.url}/v1/messages", json=body, headers=headers) as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - started)


async def through_wahub(server: FakeProviderServer, count: int, rate: float | None, folder: Path) -> float:
    """Queue ``count`` messages due at one moment; return sends per second (see the module docstring)."""
    pm = plugin_manager([fake_plugin])
    entry = server.provider_entry(messages_per_second=rate, pair_limit=None)
    config = build_config({"providers": [entry]}, database=f"sqlite:///{folder / f'bench-{rate}.db'}", pm=pm)
    server.calls.clear()
    async with running_daemon(config, pm=pm) as daemon:
        store = daemon.hub.storage.messages
        for n in range(RECIPIENTS):  # every recipient has written: their windows are open
            user = f"1555{n:07d}"
            await store.record_inbound(
                InboundMessage("fake", f"in-{user}", user, "text", {"text": {"body": "hi"}}, time.time())
            )
        held = time.time() + 3600  # queued first, then all made due at one moment
        contexts = {}
        for n in range(RECIPIENTS):
            user = f"1555{n:07d}"
            contexts[user] = await daemon.hub.storage.policy.contact("fake", user)
        for n in range(count):
            user = f"1555{n % RECIPIENTS:07d}"
            await store.enqueue(
                "fake",
                OutgoingMessage.text(user, f"bench {n}"),
                idempotency_key=f"bench-{rate}-{n}",
                contact_id=contexts[user].contact_id,
                conversation_id=contexts[user].conversation_id,
                not_before=held,
            )
        due = time.time()
        async with daemon.hub.storage.db.begin() as conn:
            await conn.execute(messages.update().where(messages.c.status == "queued").values(next_attempt_at=due))
        daemon.hub.outbox_ready.set()
        sent = sa.select(sa.func.count()).select_from(messages).where(messages.c.status == "sent")
        while True:
            async with daemon.hub.storage.db.connect() as conn:
                done = (await conn.execute(sent)).scalar_one()
            if done >= count:
                break
            await asyncio.sleep(0.01)
        finished = time.time()
    if rate is None:
        return count / (finished - due)
    calls = sorted(call.received_at for call in server.calls)
    return (len(calls) - 1) / (calls[-1] - calls[0])


async def run(count: int, paced: int) -> Result:
    server = await FakeProviderServer(statuses=False).start()
    try:
        with tempfile.TemporaryDirectory(prefix="wahub-bench-") as folder:
            base = await baseline(server, count)
            unpaced = await through_wahub(server, count, None, Path(folder))
            paced_rate = await through_wahub(server, paced, PACED_RATE, Path(folder))
    finally:
        await server.close()
    return Result(base, unpaced, paced_rate)


def targets(result: Result) -> list[Target]:
    ratio = result.unpaced_per_second / result.baseline_per_second
    error = abs(result.paced_per_second - PACED_RATE) / PACED_RATE
    return [
        Target("unpaced ratio b/a >=", ratio, UNPACED_RATIO_TARGET, ratio >= UNPACED_RATIO_TARGET),
        Target("paced rate off by at most", error, PACED_TOLERANCE, error <= PACED_TOLERANCE),
    ]


def report(result: Result, count: int, paced: int) -> str:
    ratio, error = (target.value for target in targets(result))
    lines = [
        f"outbound ({count} messages to {RECIPIENTS} recipients; paced run {paced} messages)",
        f"  (a) aiohttp client baseline   {result.baseline_per_second:8.0f} sends/s",
        f"  (b) wahub, pacing off         {result.unpaced_per_second:8.0f} sends/s ({ratio:.2f}x baseline)",
        f"  (c) wahub, paced at {PACED_RATE:.0f}/s      {result.paced_per_second:8.2f} sends/s "
        f"({error * 100:.2f}% off)",
        "targets for wahub:",
        *(target_line(target) for target in targets(result)),
    ]
    goal = "met" if ratio >= UNPACED_RATIO_GOAL else "not met"
    lines[-2] += f" (goal {UNPACED_RATIO_GOAL:g} {goal})"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--paced", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.paced))
    print(report(result, args.messages, args.paced))
    if args.json:
        facts = {"results": asdict(result), "targets": [asdict(target) for target in targets(result)], "errors": []}
        args.json.write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    main()
