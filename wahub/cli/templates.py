"""``wahub templates plan|apply``: make a provider's templates those of the templates directory.

``plan`` prints what ``apply`` would do per template and language and exits 0
when nothing would change, 2 when something would (1 when the provider's
templates cannot be listed), so scripts can tell the cases apart; ``apply``
does it, printing each step's result, and exits 1 if any step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import pluggy

from wahub.cli.common import StartupError, load, plugin_manager
from wahub.core.config.templates import TemplateDefinition, load_templates
from wahub.core.policy.template_plan import CHANGES, Action, Step, TemplateAccount, apply, plan

#: ``plan``'s exit code when the plan has changes (0: none, 1: it could not be made).
EX_CHANGES = 2

_MARKS = {Action.CREATE: "+", Action.EDIT: "~", Action.DELETE: "-", Action.KEEP: " ", Action.SAME: " "}


def add_actions(actions: Any, common: argparse.ArgumentParser) -> None:
    """Add ``plan`` and ``apply`` to the ``templates`` command's ``actions``."""
    for name, text in (
        ("plan", "show what 'apply' would change (exit 0: nothing, 2: changes)"),
        ("apply", "create, edit (and with --prune delete) templates to match the templates directory"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument(
            "--prune", action="store_true", help="also delete the provider's templates the directory does not have"
        )
        action.set_defaults(handler=_templates)


def _templates(args: argparse.Namespace) -> int:
    pm = plugin_manager(args)
    config = load(args.config, pm)
    directory = Path(config["wahub"]["templates_dir"])
    return asyncio.run(_calls(args, config, pm, directory, load_templates(directory)))


async def _calls(
    args: argparse.Namespace,
    config: dict[str, Any],
    pm: pluggy.PluginManager,
    directory: Path,
    definitions: list[TemplateDefinition],
) -> int:
    from wahub.core.errors import StorageLocked
    from wahub.core.runtime.app import command_hub

    try:
        async with command_hub(config, pm) as hub:
            accounts = _accounts(args, list(hub.providers.values()))
            if args.action == "plan":
                return await _plan(accounts, definitions, prune=args.prune)
            return await _apply(accounts, definitions, directory, prune=args.prune)
    except StorageLocked as exc:
        raise StartupError(f"{exc}. Stop the daemon first: 'templates {args.action}' uses its database") from None


def _accounts(args: argparse.Namespace, providers: list[Any]) -> list[TemplateAccount]:
    chosen = [p for p in providers if args.provider in (None, p.name)]
    if args.provider and not chosen:
        raise StartupError(f"no provider named {args.provider!r} in {args.config}")
    able = [p for p in chosen if isinstance(p, TemplateAccount)]
    if not able:
        names = ", ".join(p.name for p in chosen)
        raise StartupError(f"no provider here manages templates ({names}); the Cloud API providers and the sandbox do")
    return able


async def _steps(account: TemplateAccount, definitions: list[TemplateDefinition], prune: bool) -> list[Step] | None:
    from wahub.core.errors import ProviderError

    try:
        return await plan(account, definitions, prune=prune)
    except ProviderError as exc:
        print(f"{account.name}: cannot list the templates: {exc}", file=sys.stderr)
        return None


async def _plan(accounts: list[TemplateAccount], definitions: list[TemplateDefinition], *, prune: bool) -> int:
    changes, failed = 0, False
    for account in accounts:
        steps = await _steps(account, definitions, prune)
        if steps is None:
            failed = True
            continue
        for step in steps:
            print(f"{account.name}: {_MARKS[step.action]} {step.describe()}")
        counts = {action: sum(step.action is action for step in steps) for action in CHANGES}
        changes += sum(counts.values())
        summary = ", ".join(f"{counts[action]} to {action}" for action in (Action.CREATE, Action.EDIT, Action.DELETE))
        print(f"{account.name}: plan: {summary}")
    if failed:
        return 1
    return EX_CHANGES if changes else 0


async def _apply(
    accounts: list[TemplateAccount], definitions: list[TemplateDefinition], directory: Path, *, prune: bool
) -> int:
    failed = 0
    for account in accounts:
        steps = await _steps(account, definitions, prune)
        if steps is None:
            failed += 1
            continue
        outcomes = await apply(account, steps, files_from=directory)
        for outcome in outcomes:
            what = f"{outcome.step.action} {outcome.step.name} ({outcome.step.language})"
            if outcome.error is None:
                print(f"{account.name}: {what}: {outcome.detail}")
            else:
                print(f"{account.name}: {what} failed: {outcome.error}", file=sys.stderr)
        errors = sum(outcome.error is not None for outcome in outcomes)
        failed += errors
        done = len(outcomes) - errors
        print(f"{account.name}: applied {done} of {len(outcomes)} change(s){f', {errors} failed' if errors else ''}")
    return 1 if failed else 0
