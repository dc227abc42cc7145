"""``wahub operators``: the people who sign in to the inbox, managed straight on the database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from wahub.cli.common import StartupError, load, plugin_manager, store_options


def add_parser(commands: Any) -> None:
    store = store_options()
    operators = commands.add_parser(
        "operators",
        help="the people who sign in to the inbox: add, list, disable, enable, change a password",
        description="Passwords are asked twice at a terminal, or read as one line from standard input; "
        "never given as an argument.",
    )
    actions = operators.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[store], help="add an operator (asks for the password)")
    add.add_argument("name", help="sign-in name: 1 to 64 of a-z, 0-9, '.', '_', '-'")
    add.add_argument("--admin", action="store_true", help="may manage the other operators in the page")
    actions.add_parser("list", parents=[store], help="every operator: name, admin, disabled, created")
    for action, text in (
        ("passwd", "set a new password (ends every session of the operator)"),
        ("disable", "stop the operator signing in (ends every session at once)"),
        ("enable", "let a disabled operator sign in again"),
    ):
        actions.add_parser(action, parents=[store], help=text).add_argument("name")
    operators.set_defaults(handler=_operators)


class _Refused(Exception):
    """An operators command refused, with the reason to print."""


def _read_password() -> str:
    """A new password: asked twice at a terminal, else one line of standard input."""
    import getpass

    from wahub.plugins.inbox.passwords import password_problem

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise _Refused("the two passwords differ: nothing changed")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    problem = password_problem(password)
    if problem is not None:
        raise _Refused(f"{problem}: nothing changed")
    return password


def _operators(args: argparse.Namespace) -> int:
    """``wahub operators add|list|passwd|disable|enable``: straight on the database."""
    from wahub.plugins.inbox.passwords import Passwords, name_problem

    password_hash = None
    try:
        if args.action != "list":
            problem = name_problem(args.name)
            if problem is not None:
                raise _Refused(problem)
        if args.action in ("add", "passwd"):
            password_hash = Passwords().hash(_read_password())
    except _Refused as exc:
        print(f"wahub operators {args.action}: {exc}", file=sys.stderr)
        return 1
    config = load(args.config, plugin_manager(args))
    try:
        message = asyncio.run(_operators_calls(args, config, password_hash))
    except _Refused as exc:
        print(f"wahub operators {args.action}: {exc}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0


async def _operators_calls(args: argparse.Namespace, config: dict[str, Any], password_hash: str | None) -> str:
    import time

    from wahub.core.errors import StorageLocked
    from wahub.core.storage.store import Storage

    try:
        storage = await Storage.open(config["wahub"]["database"], media=config["wahub"]["media"])
    except StorageLocked as exc:
        raise StartupError(
            f"{exc}. Stop the daemon first, or manage operators in the inbox (an admin's page)"
        ) from None
    store, now = storage.operators, time.time()
    try:
        if args.action == "list":
            rows = await store.all()
            if not rows:
                print("no operators yet: add one with 'wahub operators add NAME --admin'", file=sys.stderr)
            for operator in rows:
                created = datetime.fromtimestamp(operator.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                role = "admin" if operator.is_admin else "operator"
                print("\t".join((operator.name, role, "disabled" if operator.disabled else "enabled", created)))
            return ""
        if args.action == "add":
            assert password_hash is not None
            if await store.add(args.name, password_hash, admin=args.admin, now=now) is None:
                raise _Refused(f"an operator named {args.name} already exists (change their password with 'passwd')")
            return f"added {'admin' if args.admin else 'operator'} {args.name}"
        if args.action == "passwd":
            assert password_hash is not None
            done = await store.set_password(args.name, password_hash, now=now)
            message = f"changed the password of {args.name}; their sessions have ended"
        else:
            done = await store.set_disabled(args.name, args.action == "disable", now=now)
            ended = "; their sessions have ended" if args.action == "disable" else ""
            message = f"{args.action}d {args.name}{ended}"
        if not done:
            raise _Refused(f"no operator named {args.name} (see 'wahub operators list')")
        return message
    finally:
        await storage.close()
