"""The plugin manager: built-ins, entry points, sync-only checks, isolated async hooks."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_plugin
from wahub import hookimpl
from wahub.core import plugins
from wahub.core.config.schema import ConfigError, validate_config
from wahub.core.hub import Hub
from wahub.core.metrics import Metrics
from wahub.core.plugins import PluginError, build_plugin_manager, call_hook, registered_providers, registered_sections
from wahub.testing import build_config, plugin_manager, running_daemon

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
