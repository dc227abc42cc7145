"""The ingest benchmark's traffic and daemon are what it claims: signed Cloud API
webhooks, one message to three statuses, that a daemon configured like the
benchmark's stores, processes and answers through the fake Graph API.

These tests send a few dozen requests; they measure nothing."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from pathlib import Path

import aiohttp

from bench.ingest import wahub_config
from bench.payloads import SIGNATURE_HEADER, CloudBodies, read_request_files, write_request_files
from bench.replicas import Replicas
from bench.replicas import parse_args as parse_replicas_args
from wahub.core.config.schema import load_config
from wahub.core.models import InboundMessage, StatusEvent
from wahub.core.plugins import registered_providers, registered_sections
from wahub.core.provider import signature_matches
from wahub.plugins.providers.cloud.webhook import parse_cloud_webhook
from wahub.testing import plugin_manager, running_daemon, wait_until
from wahub.testing.fake_graph import FakeGraphServer

NUMBER_ID = FakeGraphServer.phone_number_id


def requests(tmp_path: Path, secret: str, count: int) -> list[tuple[str, bytes]]:
    paths = write_request_files(tmp_path / "requests", "run", count, 2, secret, CloudBodies())
    return read_request_files(paths)


def test_requests_are_signed_cloud_webhooks_one_message_to_three_statuses(tmp_path: Path) -> None:
    secret = secrets.token_hex(24)
    sent = requests(tmp_path, secret, 40)
    events = []
    for signature, body in sent:
        assert signature_matches(secret, signature, body)
        events += parse_cloud_webhook(body, default="main", numbers={NUMBER_ID: "main"}, accounts={})
    kinds = Counter(type(event) for event in events)
    assert kinds == {InboundMessage: 10, StatusEvent: 30}
    assert len({event.external_id for event in events}) == 40
    statuses = [event for event in events if isinstance(event, StatusEvent)]
    assert Counter(status.status for status in statuses) == {"sent": 10, "delivered": 10, "read": 10}


def test_each_daemon_of_the_replicas_benchmark_gets_requests_of_its_own(tmp_path: Path) -> None:
    args = parse_replicas_args(["--daemons", "1,2", "--duration", "1", "--warmup", "1", "--max-rate", "8"])
    bench = Replicas(args, tmp_path)
    bench.prepare()
    ids: list[str] = []
    for path in sorted((tmp_path / "requests").iterdir()):
        for _signature, body in read_request_files([path]):
            events = parse_cloud_webhook(body, default="main", numbers={NUMBER_ID: "main"}, accounts={})
            ids += [event.external_id for event in events]
    # Steps of 1 and 2 daemons, warm-up and run: 8 requests per phase and step, split between the daemons.
    assert len(list((tmp_path / "requests").iterdir())) == 2 * (1 + 2)
    assert len(ids) == len(set(ids)) == 4 * 8


async def test_the_benchmarks_daemon_stores_processes_and_replies(tmp_path: Path) -> None:
    graph = await FakeGraphServer(auto_statuses=False).start()
    secret = secrets.token_hex(24)
    try:
        config_path = tmp_path / "config.yaml"
        entry = {**graph.provider_entry(template_sync_hours=None), "app_secret": secret}
        config_path.write_text(wahub_config(8080, tmp_path, entry))
        pm = plugin_manager()
        config = load_config(config_path, sections=registered_sections(pm), platforms=registered_providers(pm))
        async with running_daemon(config, pm=pm) as daemon, aiohttp.ClientSession() as http:

            async def post(signature: str, body: bytes) -> int:
                headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
                async with http.post(f"{daemon.url}/webhooks/main", data=body, headers=headers) as response:
                    return response.status

            answers = await asyncio.gather(*(post(*request) for request in requests(tmp_path, secret, 16)))
            assert answers == [200] * 16

            async def processed() -> bool:
                depth, _ = await daemon.hub.storage.inbox_depth()
                return depth == 0 and len(graph.messages) == 4

            await wait_until(processed, within=30)
    finally:
        await graph.close()
    assert graph.schema_errors == []
    assert all(message["type"] == "text" for message in graph.messages)
