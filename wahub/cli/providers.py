"""``wahub providers``: what each installed provider sends, and what becomes of
the rest (``wahub.core.canonical.capability_matrix``); and the arguments of
``wahub number register|pin``, which run as account commands.

``wahub providers`` needs no configuration: it reads ``CAPABILITIES`` of every
class the ``register_providers`` hook returns (built-ins, installed plugins and
``-p`` modules). ``--json`` prints the matrix for machines; ``--markdown``
prints it as a Markdown table, or with a file rewrites that file's table
between ``<!-- capabilities:start -->`` and ``<!-- capabilities:end -->``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wahub.cli.common import StartupError, plugin_manager
from wahub.core.canonical import capability_matrix
from wahub.core.canonical.fit import Capabilities
from wahub.core.plugins import check_registrations, registered_providers


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``providers`` and ``number`` to ``commands``; returns ``number``,
    whose handler is the account commands' (``common`` has ``-c``, ``--provider``, ``-p``)."""
    providers = commands.add_parser(
        "providers",
        help="show what each installed provider sends, its limits, and the fallbacks for the rest",
        description="One column per installed provider: 'yes' sends the kind as written, 'as list' turns "
        "more reply buttons than allowed into a list, 'as text' sends the kind's text form, 'no' refuses it.",
    )
    output = providers.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the matrix as JSON")
    output.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="FILE",
        help="print the matrix as a Markdown table; with FILE, rewrite FILE's table between "
        "<!-- capabilities:start --> and <!-- capabilities:end --> (docs/choosing-a-provider.md)",
    )
    providers.add_argument("-p", "--plugin", action="append", default=[], metavar="MODULE", help="also load MODULE")
    providers.set_defaults(handler=_providers)

    number: argparse.ArgumentParser = commands.add_parser(
        "number",
        help="register a Cloud API business number and set its two-step verification PIN",
        description="The six-digit PIN is given with --pin, or asked at a terminal, or read as one line "
        "from standard input; it is never printed.",
    )
    actions = number.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("register", "register the provider's number on the Cloud API (with its two-step PIN)"),
        ("pin", "set the number's two-step verification PIN"),
    ):
        actions.add_parser(action, parents=[common], help=text).add_argument(
            "--pin",
            metavar="PIN",
            type=_pin_argument,
            help="the six-digit two-step verification PIN (asked when not given)",
        )
    return number


def _pin_argument(text: str) -> str:
    from wahub.plugins.providers.cloud.number import pin_problem

    problem = pin_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)  # the value itself is not repeated: it is a secret
    return text


def read_pin(given: str | None) -> str:
    """The PIN of ``wahub number``: ``given``, else asked at a terminal, else one
    line of standard input; ``StartupError`` (never repeating it) when it is not six digits."""
    from wahub.plugins.providers.cloud.number import pin_problem

    if given is None:
        import getpass

        if sys.stdin.isatty():
            given = getpass.getpass("Two-step verification PIN: ")
        else:
            given = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    problem = pin_problem(given)
    if problem is not None:
        raise StartupError(f"--pin: {problem}")
    return given


def installed_capabilities(plugins: list[str]) -> dict[str, Capabilities]:
    """``{platform: CAPABILITIES}`` of every registered provider (with the ``plugins`` modules loaded)."""
    pm = plugin_manager(argparse.Namespace(plugin=plugins))
    check_registrations(pm)
    return {platform: cls.CAPABILITIES for platform, cls in registered_providers(pm).items()}


def _providers(args: argparse.Namespace) -> int:
    providers = installed_capabilities(args.plugin)
    if not providers:
        print("no provider is installed", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(capability_matrix.as_json(providers), indent=2, ensure_ascii=False))
    elif args.markdown == "-":
        print(capability_matrix.as_markdown(providers), end="")
    elif args.markdown:
        path = Path(args.markdown)
        try:
            document = path.read_text()
            rewritten = capability_matrix.replace_table(document, providers)
        except (OSError, ValueError) as exc:
            raise StartupError(f"{path}: cannot rewrite the capability table: {exc}") from exc
        if rewritten != document:
            path.write_text(rewritten)
        print(f"{path}: {'table rewritten' if rewritten != document else 'table already up to date'}")
    else:
        print(capability_matrix.as_text(providers), end="")
    return 0
