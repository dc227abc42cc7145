"""The plugin manager: built-ins, entry points, sync-only checks, isolated async
hooks called through pluggy (wrappers, call monitoring, WAHUB_TRACE_HOOKS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pluggy
import pytest

from tests.helpers import install_plugin
from wahub import hookimpl, hookspecs
from wahub.core import plugins
from wahub.core.config.schema import ConfigError, validate_config
from wahub.core.errors import PluginError
from wahub.core.hub import Hub
from wahub.core.metrics import Metrics
from wahub.core.plugins import build_plugin_manager, call_hook, registered_providers, registered_sections
from wahub.testing import (
    build_config,
    plugin_manager,
    running_daemon,
    sandbox_message,
    signed_sandbox_webhook,
    wait_until,
)

PLUGIN_SOURCE = """
import voluptuous as vol
from wahub import hookimpl
from wahub.core.provider import PROVIDER_SCHEMA_BASE
from wahub.plugins.providers.sandbox.provider import SandboxProvider

class EchoProvider(SandboxProvider):
    PLATFORM = "echo"
    CONFIG_SCHEMA = PROVIDER_SCHEMA_BASE.extend({vol.Required("api_key"): vol.All(str, vol.Length(min=8))})

@hookimpl
def register_providers():
    return [EchoProvider]
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install a plugin distribution with a ``wahub`` entry point, the way pip would."""
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path, "wahub_echo", PLUGIN_SOURCE)))
    yield "wahub_echo"
    sys.modules.pop("wahub_echo", None)


def test_builtins_are_loaded_through_the_same_hooks() -> None:
    pm = build_plugin_manager(load_entry_points=False)
    assert set(plugins.DEFAULT_PLUGINS) <= {name for name, _ in pm.list_name_plugin()}
    assert "sandbox" in registered_providers(pm)
    assert "router" in registered_sections(pm)


def test_entry_point_plugin_is_loaded_and_its_schema_enforced(installed_plugin: str) -> None:
    pm = build_plugin_manager()
    assert "echo" in registered_providers(pm)
    summary = dict(plugins.plugin_summary(pm))
    assert summary["wahub_echo (wahub_echo 1.0)"] == ["register_providers"]
    args = {"sections": registered_sections(pm), "platforms": registered_providers(pm)}
    good = validate_config({"providers": [{"platform": "echo", "name": "e", "api_key": "12345678"}]}, **args)
    assert good["providers"][0]["api_key"] == "12345678"
    with pytest.raises(ConfigError) as caught:
        validate_config({"providers": [{"platform": "echo", "name": "e", "api_key": "short"}]}, **args)
    assert "providers[0].api_key" in str(caught.value)


def test_async_implementation_of_sync_only_hook_stops_start_up() -> None:
    class Impatient:
        @hookimpl
        async def route_message(self, hub: Any, message: Any) -> None:
            return None

    with pytest.raises(PluginError) as caught:
        build_plugin_manager(load_entry_points=False, extra_plugins=[Impatient()])
    message = str(caught.value)
    assert "route_message" in message and "Impatient" in message and "sync only" in message


def test_misspelled_hook_stops_start_up() -> None:
    class Typo:
        @hookimpl
        def inbound_mesage(self, message: Any) -> None:
            return None

    with pytest.raises(PluginError, match="inbound_mesage"):
        build_plugin_manager(load_entry_points=False, extra_plugins=[Typo()])


async def test_async_hooks_are_awaited_isolated_and_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Broken:
        @hookimpl
        async def inbound_message(self, message: str) -> None:
            raise RuntimeError("boom")

    class Slow:
        @hookimpl
        async def inbound_message(self, message: str) -> None:
            await asyncio.Event().wait()

    class Fine:
        @hookimpl
        async def inbound_message(self, hub: Hub, message: str) -> None:
            seen.append(message)

        @hookimpl
        def handle_exception(self, exception: BaseException, context: dict[str, Any]) -> None:
            seen.append(f"{context['plugin']}:{type(exception).__name__}")

    monkeypatch.setattr(plugins, "HOOK_TIMEOUT", 0.05)
    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[Broken(), Slow(), Fine()])
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    await call_hook(hub, "inbound_message", hub=hub, message="m1")
    assert "m1" in seen
    assert any(entry.endswith(":RuntimeError") for entry in seen)
    assert any(entry.endswith(":TimeoutError") for entry in seen)


def test_shutdown_stages_fit_in_ten_seconds() -> None:
    from wahub.core.work.lifecycle import SHUTDOWN_GRACE

    assert sum(SHUTDOWN_GRACE.values()) < 10.0


async def test_a_plugin_whose_exit_hangs_does_not_hold_shutdown(sqlite_url: str) -> None:
    exited: list[str] = []

    class Stuck:
        @hookimpl
        def lifespan(self, hub: Hub) -> Any:
            @contextlib.asynccontextmanager
            async def forever() -> AsyncIterator[None]:
                yield
                exited.append("started")
                await asyncio.Event().wait()

            return forever()

    pm = plugin_manager([Stuck()])
    async with asyncio.timeout(30):  # without the bound on plugin exits this would never end
        async with running_daemon(build_config(database=sqlite_url, pm=pm), pm=pm):
            pass
    assert exited == ["started"]


def test_every_hook_is_either_sync_only_or_an_observer() -> None:
    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "wahub_spec")}
    assert specs == hookspecs.SYNC_ONLY_HOOKS | hookspecs.OBSERVER_HOOKS
    assert not hookspecs.SYNC_ONLY_HOOKS & hookspecs.OBSERVER_HOOKS


async def test_hook_wrappers_see_an_observer_call_and_its_result() -> None:
    seen: list[object] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def inbound_message(self, message: str) -> Generator[None, list[object], list[object]]:
            seen.append(f"wrapper saw {message}")
            result = yield
            seen.append(("wrapper result", result))
            return result

    class OldStyleWrapper:
        @hookimpl(hookwrapper=True)
        def inbound_message(self, message: str) -> Generator[None, pluggy.Result[list[object]], None]:
            seen.append(f"old-style wrapper saw {message}")
            outcome = yield
            seen.append(("old-style wrapper result", outcome.get_result()))

    class SyncObserver:
        @hookimpl
        def inbound_message(self, message: str) -> None:
            seen.append(f"sync observer saw {message}")

    class AsyncObserver:
        @hookimpl
        async def inbound_message(self, message: str) -> None:
            seen.append(f"async observer saw {message}")

    pm = build_plugin_manager(
        load_entry_points=False, extra_plugins=[Wrapper(), OldStyleWrapper(), SyncObserver(), AsyncObserver()]
    )
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    await call_hook(hub, "inbound_message", hub=hub, message="m1")

    # pluggy calls the later-registered first: the old-style wrapper is outermost,
    # the async observer is called before the sync one; its body runs when awaited.
    assert seen[:3] == ["old-style wrapper saw m1", "wrapper saw m1", "sync observer saw m1"]
    (label, result), (old_label, old_result) = seen[3], seen[4]
    assert label == "wrapper result" and old_label == "old-style wrapper result"
    assert isinstance(result, list) and len(result) == 1 and asyncio.iscoroutine(result[0])
    assert old_result is result
    assert seen[5:] == ["async observer saw m1"]


async def test_an_implementation_raising_synchronously_does_not_stop_the_others_in_pluggy_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    order: list[str] = []
    reported: list[tuple[str, str, str]] = []

    class First:
        @hookimpl(tryfirst=True)
        def outbound_message(self, message: str) -> None:
            order.append("first")

    class Raising:
        @hookimpl
        def outbound_message(self, message: str) -> None:
            order.append("raising")
            raise ValueError("sync boom")

    class Last:
        @hookimpl(trylast=True)
        async def outbound_message(self, message: str) -> None:
            order.append("last")

    class Reporter:
        @hookimpl
        def handle_exception(self, exception: BaseException, context: dict[str, Any]) -> None:
            reported.append((context["hook"], context["plugin"], str(exception)))

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[Last(), Raising(), First(), Reporter()])
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    with caplog.at_level(logging.ERROR, logger="wahub.core.plugins"):
        await call_hook(hub, "outbound_message", hub=hub, message="m", result="r")
    assert order == ["first", "raising", "last"]
    raising = plugins._readable_name(Raising)
    assert reported == [("outbound_message", raising, "sync boom")]
    failed = f"plugin {raising} failed in hook outbound_message"
    assert any(failed in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_failing_handle_exception_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Clumsy:
        @hookimpl
        async def handle_exception(self, exception: BaseException) -> None:
            calls.append(str(exception))
            raise RuntimeError("clumsy")

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[Clumsy()])
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    with caplog.at_level(logging.ERROR, logger="wahub.core.plugins"):
        await call_hook(hub, "handle_exception", hub=hub, exception=ValueError("first"), context={})
    assert calls == ["first"]
    assert [r.getMessage() for r in caplog.records] == [
        f"plugin {plugins._readable_name(Clumsy)} failed in hook handle_exception"
    ]


async def test_a_raising_hook_wrapper_is_logged_and_reported_and_awaitables_still_awaited() -> None:
    seen: list[str] = []

    class Observer:
        @hookimpl
        async def account_update(self, event: str) -> None:
            seen.append(f"observer saw {event}")

        @hookimpl
        def handle_exception(self, exception: BaseException, context: dict[str, Any]) -> None:
            seen.append(f"{context['plugin']}: {exception}")

    class BadWrapper:
        @hookimpl(wrapper=True)
        def account_update(self) -> Generator[None, list[object], list[object]]:
            yield
            raise RuntimeError("wrapper boom")

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[Observer(), BadWrapper()])
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    await call_hook(hub, "account_update", hub=hub, event="APPROVED")
    assert seen == [f"{plugins._readable_name(BadWrapper)}: wrapper boom", "observer saw APPROVED"]


def test_a_plugin_that_wraps_and_implements_one_observer_hook_stops_start_up() -> None:
    class Both:
        @hookimpl(wrapper=True)
        def inbound_message(self) -> Generator[None, object, object]:
            return (yield)

        @hookimpl(specname="inbound_message")
        def observe(self, message: Any) -> None:
            return None

    with pytest.raises(PluginError, match="both wraps and implements hook 'inbound_message'"):
        build_plugin_manager(load_entry_points=False, extra_plugins=[Both()])


async def test_pluggy_call_monitoring_sees_observer_hooks() -> None:
    monitored: list[tuple[str, list[str]]] = []

    class Observer:
        @hookimpl
        async def outbound_message(self, message: str, result: str) -> None:
            return None

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[Observer()])
    pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: monitored.append((name, [impl.function.__name__ for impl in impls])),
        lambda outcome, name, impls, kwargs: None,
    )
    hub = Hub(config={}, pm=pm, metrics=Metrics())
    await call_hook(hub, "outbound_message", hub=hub, message="m", result="r")
    assert monitored == [("outbound_message", ["outbound_message"])]


async def test_trace_hooks_logs_each_call_with_its_plugins_and_masked_arguments(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    class Observer:
        @hookimpl
        async def inbound_message(self, message: Any) -> None:
            seen.append(message.external_id)

    monkeypatch.setenv(plugins.TRACE_ENV, "1")
    caplog.set_level(logging.INFO, logger="wahub.hooks")
    pm = plugin_manager([Observer()])
    event = sandbox_message("hi", sender="15557654321")
    async with running_daemon(build_config(database=sqlite_url, pm=pm), pm=pm) as daemon:
        body, headers = signed_sandbox_webhook([event])
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{daemon.url}/webhooks/sandbox", data=body, headers=headers) as response,
        ):
            assert response.status == 200

        async def observed() -> bool:
            return event["id"] in seen

        await wait_until(observed)

    lines = [r.getMessage() for r in caplog.records if r.name == "wahub.hooks"]
    observer = plugins._readable_name(Observer)
    assert any(
        line.startswith("hook inbound_message: ") and observer in line and "message=<InboundMessage>" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("hook register_routes: ") and "wahub.plugins.providers.sandbox.provider" in line
        for line in lines
    ), lines
    assert any(line.startswith("hook route_message: ") and "wahub.plugins.router" in line for line in lines), lines
    assert not any("15557654321" in line for line in lines)
