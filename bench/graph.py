"""The fake Graph API (``wahub.testing.fake_graph``) as a process, for the daemon's replies.

Run as ``python -m bench.graph``: it serves on a free loopback port, prints one line
``WAHUB_BENCH_GRAPH <JSON>`` with its ``providers:`` entry (``api_base`` and the
credentials) and runs until SIGTERM. It posts no status webhooks back
(``auto_statuses`` off): the load generator already sends a reply's three statuses
per user message, and extra requests from outside the load generator would be
counted against the server's CPU without being counted as requests.
"""

from __future__ import annotations

import asyncio
import json
import signal
from contextlib import suppress

from wahub.testing.fake_graph import FakeGraphServer

READY_MARKER = "WAHUB_BENCH_GRAPH "


async def serve() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    graph = await FakeGraphServer(auto_statuses=False).start()
    accepted = 0
    try:
        entry = graph.provider_entry(template_sync_hours=None)
        print(READY_MARKER + json.dumps(entry), flush=True)
        while not stop.is_set():
            # The fake records every request; a long run must not grow without bound.
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
            accepted += len(graph.messages)
            for recorded in (graph.messages, graph.requests, graph.reads):
                recorded.clear()
        summary = {"messages": accepted, "schema_errors": graph.schema_errors[:5]}
        print(READY_MARKER + json.dumps(summary), flush=True)
    finally:
        await graph.close()


if __name__ == "__main__":
    asyncio.run(serve())
