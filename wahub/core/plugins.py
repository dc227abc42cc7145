"""The plugin manager: built-ins and third-party plugins load the same way.

Built-ins are named in ``DEFAULT_PLUGINS`` (the only place the core names a
plugin); third-party plugins come from the ``wahub`` entry-point group.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable, Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from wahub import hookspecs

if TYPE_CHECKING:
    from wahub.core.hub import Hub
    from wahub.core.provider import Provider

_LOGGER = logging.getLogger(__name__)

DEFAULT_PLUGINS: tuple[str, ...] = (
    "wahub.plugins.providers.sandbox.provider",
    "wahub.plugins.providers.cloud.operations",
    "wahub.plugins.providers.cloud.meta",
    "wahub.plugins.providers.cloud.dialog360",
    "wahub.plugins.router",
    "wahub.plugins.housekeeping",
)

#: Seconds a may-be-async hook implementation gets before it is abandoned.
HOOK_TIMEOUT = 30.0


class PluginError(Exception):
    """A plugin that cannot be loaded as written; start-up stops with this message."""


def build_plugin_manager(
    *, load_entry_points: bool = True, extra_plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """Load built-in, entry-point and ``extra_plugins``; refuse unknown hooks
    and coroutine functions for sync-only hooks."""
    pm = pluggy.PluginManager("wahub")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(import_module(name), name=name)
    if load_entry_points:
        _import_entry_points()
        pm.load_setuptools_entrypoints("wahub")
    for plugin in extra_plugins:
        pm.register(plugin, name=_readable_name(plugin))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
    _check_sync_only(pm)
    return pm


def _import_entry_points() -> None:
    """Import every ``wahub`` entry point, naming the one that fails."""
    for entry_point in entry_points(group="wahub"):
        try:
            entry_point.load()
        except Exception as exc:  # any import error of a third-party plugin
            raise PluginError(f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc!r}") from exc


def _readable_name(plugin: object) -> str:
    if inspect.ismodule(plugin):
        return plugin.__name__
    cls = plugin if inspect.isclass(plugin) else type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_sync_only(pm: pluggy.PluginManager) -> None:
    for hook_name in sorted(hookspecs.SYNC_ONLY_HOOKS):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function):
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements hook {hook_name!r} with an async function, "
                    f"but {hook_name!r} is sync only: make it a plain 'def' "
                    "(see docs/hooks.md)"
                )


def plugin_summary(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    """``(plugin name, sorted hook names)`` for every loaded plugin, for ``wahub plugins``."""
    dist_names = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    summary = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        summary.append((f"{name} ({dist_names[id(plugin)]})" if id(plugin) in dist_names else name, hooks))
    return summary


def registered_providers(pm: pluggy.PluginManager) -> dict[str, type[Provider]]:
    """``{platform: provider class}`` from every ``register_providers``."""
    return registered_platforms(pm, "register_providers")


def registered_platforms(pm: pluggy.PluginManager, hook_name: str) -> dict[str, Any]:
    """``{PLATFORM: class}`` from every implementation of a ``register_*`` hook."""
    platforms: dict[str, Any] = {}
    for classes in getattr(pm.hook, hook_name)():
        for cls in classes or ():
            if cls.PLATFORM in platforms and platforms[cls.PLATFORM] is not cls:
                raise PluginError(f"two plugins register the {hook_name[9:-1]} platform {cls.PLATFORM!r}")
            platforms[cls.PLATFORM] = cls
    return platforms


def check_registrations(pm: pluggy.PluginManager) -> None:
    """Collect every ``register_*`` hook once at start-up, so conflicts stop it."""
    for hook_name in ("register_providers", "register_ai_backends", "register_crm_backends"):
        registered_platforms(pm, hook_name)
    registered_sections(pm)


def registered_sections(pm: pluggy.PluginManager) -> dict[str, Any]:
    """``{section: schema}`` from every ``register_config_sections``."""
    sections: dict[str, Any] = {}
    for contributed in pm.hook.register_config_sections():
        for name, schema in (contributed or {}).items():
            if name in sections:
                raise PluginError(f"two plugins register the config section {name!r}")
            sections[name] = schema
    return sections


async def call_hook(hub: Hub, hook_name: str, /, **kwargs: Any) -> None:
    """Call an observer hook, awaiting each implementation that returns an
    awaitable, isolated and timed out; failures are logged with the plugin's
    name and reported to ``handle_exception``."""
    for impl in reversed(getattr(hub.pm.hook, hook_name).get_hookimpls()):
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                result = impl.function(*(kwargs[arg] for arg in impl.argnames))
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            _LOGGER.exception("plugin %s failed in hook %s", impl.plugin_name, hook_name)
            if hook_name != "handle_exception":
                await call_hook(
                    hub,
                    "handle_exception",
                    hub=hub,
                    exception=exc,
                    context={"hook": hook_name, "plugin": impl.plugin_name},
                )


def report_exception(hub: Hub, exception: BaseException, context: Mapping[str, Any]) -> None:
    """Hand an isolated failure to the ``handle_exception`` observers in the background."""
    hub.spawn(call_hook(hub, "handle_exception", hub=hub, exception=exception, context=dict(context)))
