"""The plugin manager: built-ins and third-party plugins load the same way.

Built-ins are named in ``DEFAULT_PLUGINS`` (the only place the core names a
plugin); third-party plugins come from the ``wahub`` entry-point group.

Every hook is called through pluggy (``pm.hook.<name>``), so hook wrappers and
pluggy's call monitoring see each call; ``call_hook`` adds, for the observer
hooks, the awaiting, the isolation and the time limit of each implementation.
With ``WAHUB_TRACE_HOOKS=1`` every call is logged on ``wahub.hooks``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from wahub import hookspecs
from wahub.core.errors import PluginError
from wahub.core.privacy import mask_digits

if TYPE_CHECKING:
    from wahub.core.ai import AIBackend
    from wahub.core.crm import CRMBackend
    from wahub.core.hub import Hub
    from wahub.core.provider import Provider

_LOGGER = logging.getLogger(__name__)
_TRACE_LOGGER = logging.getLogger("wahub.hooks")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "wahub.plugins.providers.sandbox.provider",
    "wahub.plugins.providers.cloud.operations",
    "wahub.plugins.providers.cloud.meta",
    "wahub.plugins.providers.cloud.dialog360",
    "wahub.plugins.providers.bird.provider",
    "wahub.plugins.providers.infobip.provider",
    "wahub.plugins.providers.twilio.provider",
    "wahub.plugins.providers.vonage.provider",
    "wahub.plugins.router",
    "wahub.plugins.inbox.plugin",
    "wahub.plugins.housekeeping",
    "wahub.plugins.reminders",
    "wahub.plugins.ai.faq",
    "wahub.plugins.ai.openai",
    "wahub.plugins.crm.webhook",
    "wahub.plugins.crm.hubspot",
    "wahub.plugins.crm.zendesk",
    "wahub.plugins.crm.chatwoot",
)

#: Seconds a may-be-async hook implementation gets before it is abandoned.
HOOK_TIMEOUT = 30.0

#: The environment variable that turns on the log line of every hook call.
TRACE_ENV = "WAHUB_TRACE_HOOKS"
#: How many characters of a plain argument (a string, a number) a trace line shows.
_TRACE_CHARS = 40


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
    _check_wrappers(pm)
    if os.environ.get(TRACE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        trace_hook_calls(pm)
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


def _check_wrappers(pm: pluggy.PluginManager) -> None:
    """A plugin wraps an observer hook or implements it, not both: ``call_hook``
    hands pluggy the implementations apart from the wrappers, plugin by plugin."""
    for plugin_name, plugin in pm.list_name_plugin():
        for caller in pm.get_hookcallers(plugin) or []:
            if caller.name not in hookspecs.OBSERVER_HOOKS:
                continue
            kinds = {impl.wrapper or impl.hookwrapper for impl in caller.get_hookimpls() if impl.plugin is plugin}
            if kinds == {True, False}:
                raise PluginError(
                    f"plugin {plugin_name!r} both wraps and implements hook {caller.name!r}: "
                    "make them two plugins (see docs/hooks.md)"
                )


def trace_hook_calls(pm: pluggy.PluginManager) -> Callable[[], None]:
    """Log every hook call on ``wahub.hooks`` (what ``WAHUB_TRACE_HOOKS=1`` turns on):
    the hook, the plugins pluggy called in their order, the arguments in brief
    and masked, and the exception if the call raised. Returns the undo function."""
    if _TRACE_LOGGER.level == logging.NOTSET:
        _TRACE_LOGGER.setLevel(logging.INFO)

    def before(hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        return None

    def after(
        outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        called = ", ".join(_traced_name(impl) for impl in reversed(hook_impls)) or "no implementation"
        arguments = ", ".join(f"{name}={_brief(value)}" for name, value in kwargs.items())
        failure = outcome.exception
        if failure is None:
            _TRACE_LOGGER.info("hook %s: %s (%s)", hook_name, called, arguments)
        else:
            _TRACE_LOGGER.info("hook %s: %s (%s) raised %s", hook_name, called, arguments, type(failure).__name__)

    return pm.add_hookcall_monitoring(before, after)


def _traced_name(impl: pluggy.HookImpl) -> str:
    # An observer's implementation reaches pluggy isolated (see call_hook),
    # carrying the name of the plugin it belongs to.
    name = getattr(impl.function, "wahub_plugin_name", None) or impl.plugin_name
    return f"{name} (wrapper)" if impl.wrapper or impl.hookwrapper else str(name)


def _brief(value: object) -> str:
    """A plain value cut short, digit runs masked; any other object by its type alone
    (a hub, a message, a configuration may hold secrets and phone numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = mask_digits(repr(value))
        return text if len(text) <= _TRACE_CHARS else f"{text[: _TRACE_CHARS - 3]}..."
    return f"<{type(value).__name__}>"


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


def registered_ai_backends(pm: pluggy.PluginManager) -> dict[str, type[AIBackend]]:
    """``{platform: AI backend class}`` from every ``register_ai_backends``."""
    return registered_platforms(pm, "register_ai_backends")


def registered_crm_backends(pm: pluggy.PluginManager) -> dict[str, type[CRMBackend]]:
    """``{platform: CRM backend class}`` from every ``register_crm_backends``."""
    return registered_platforms(pm, "register_crm_backends")


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
    registered_providers(pm)
    registered_ai_backends(pm)
    registered_crm_backends(pm)
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


@dataclass(slots=True)
class _Called:
    """What one isolated observer implementation did when pluggy called it."""

    plugin: str
    awaitable: Awaitable[Any] | None = None
    error: Exception | None = None


def _isolated(impl: pluggy.HookImpl, called: list[_Called]) -> Callable[..., Any]:
    """``impl``'s function as pluggy calls it for ``call_hook``: the same
    parameters (pluggy reads them through ``__wrapped__``), its result returned
    as is, but an exception it raises kept in ``called`` instead of ending the call."""
    function = impl.function

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - kept, then logged and reported by call_hook
            called.append(_Called(impl.plugin_name, error=exc))
            return None
        called.append(_Called(impl.plugin_name, awaitable=result if inspect.isawaitable(result) else None))
        return result

    call.wahub_plugin_name = impl.plugin_name  # type: ignore[attr-defined]
    return call


async def call_hook(hub: Hub, hook_name: str, /, **kwargs: Any) -> None:
    """Call an observer hook through pluggy, then await each awaitable an
    implementation returned, in pluggy's order, isolated and timed out;
    failures are logged with the plugin's name and reported to ``handle_exception``.

    The plugins' hook wrappers and pluggy's call monitoring see the call: pluggy
    runs the wrappers around the implementations, each of which it is handed
    wrapped (``_isolated``) so that one raising does not stop the others.
    """
    caller: pluggy.HookCaller = getattr(hub.pm.hook, hook_name)
    implementations = [impl for impl in caller.get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]
    called: list[_Called] = []
    try:
        # The hook without its implementations (only the wrappers stay), called
        # with them isolated, in the order pluggy keeps them in.
        hub.pm.subset_hook_caller(hook_name, remove_plugins=[impl.plugin for impl in implementations]).call_extra(
            [_isolated(impl, called) for impl in implementations], kwargs
        )
    except Exception as exc:  # noqa: BLE001 - a hook wrapper raised (implementations are isolated)
        wrappers = ", ".join(impl.plugin_name for impl in caller.get_hookimpls() if impl.wrapper or impl.hookwrapper)
        await _hook_failed(hub, hook_name, wrappers or "pluggy", exc)
    try:
        for outcome in called:
            awaitable, outcome.awaitable = outcome.awaitable, None
            failure = outcome.error
            if awaitable is not None:
                try:
                    async with asyncio.timeout(HOOK_TIMEOUT):
                        await awaitable
                except Exception as exc:  # noqa: BLE001 - logged and reported below
                    failure = exc
            if failure is not None:
                await _hook_failed(hub, hook_name, outcome.plugin, failure)
    finally:
        for outcome in called:  # cancelled part-way: the rest are never awaited
            if inspect.iscoroutine(outcome.awaitable):
                outcome.awaitable.close()


async def _hook_failed(hub: Hub, hook_name: str, plugin: str, exc: Exception) -> None:
    _LOGGER.error("plugin %s failed in hook %s", plugin, hook_name, exc_info=exc)
    if hook_name != "handle_exception":
        await call_hook(hub, "handle_exception", hub=hub, exception=exc, context={"hook": hook_name, "plugin": plugin})


def report_exception(hub: Hub, exception: BaseException, context: Mapping[str, Any]) -> None:
    """Hand an isolated failure to the ``handle_exception`` observers in the background."""
    hub.spawn(call_hook(hub, "handle_exception", hub=hub, exception=exception, context=dict(context)))
