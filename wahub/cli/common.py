"""What every ``wahub`` command shares: loading the configuration and the
plugins exactly as ``wahub run`` does, the exit codes, and the error a
command raises when it cannot go on."""

from __future__ import annotations

import argparse
from importlib import import_module
from pathlib import Path
from typing import Any

import pluggy

from wahub.core.config.schema import default_config, load_config
from wahub.core.errors import PluginError
from wahub.core.plugins import (
    build_plugin_manager,
    check_registrations,
    registered_ai_backends,
    registered_crm_backends,
    registered_providers,
    registered_sections,
)

EX_UNAVAILABLE = 69  # sysexits.h: a resource the daemon needs is not available
EX_CONFIG = 78  # sysexits.h: the configuration is wrong


class StartupError(Exception):
    """The daemon cannot start for a reason outside the configuration."""


def load(path: Path | None, pm: pluggy.PluginManager) -> dict[str, Any]:
    check_registrations(pm)
    registered = {
        "sections": registered_sections(pm),
        "platforms": registered_providers(pm),
        "ai_platforms": registered_ai_backends(pm),
        "crm_platforms": registered_crm_backends(pm),
    }
    if path is None:
        return default_config(**registered)
    return load_config(path, **registered)


def plugin_manager(args: argparse.Namespace) -> pluggy.PluginManager:
    modules = []
    for name in args.plugin:
        try:
            modules.append(import_module(name))
        except Exception as exc:  # any import error of the named module
            raise PluginError(f"plugin module {name!r} (from --plugin) failed to load: {exc!r}") from exc
    return build_plugin_manager(extra_plugins=modules)


def store_options() -> argparse.ArgumentParser:
    """The options of a command that works on the configured database: ``-c`` and ``-p``."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    store.add_argument("-p", "--plugin", action="append", default=[], metavar="MODULE", help="also load MODULE")
    return store
