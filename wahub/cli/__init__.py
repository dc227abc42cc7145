"""The ``wahub`` command: the only place that prints for users or exits."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pluggy

from wahub import __version__
from wahub.cli import deliveries, notify, operators
from wahub.cli import providers as providers_cli
from wahub.cli import templates as templates_cli
from wahub.cli.common import EX_CONFIG, EX_UNAVAILABLE, StartupError, load, plugin_manager, store_options
from wahub.core.config.schema import ConfigError
from wahub.core.errors import PluginError
from wahub.core.http.serving import MalformedRequestFilter
from wahub.core.plugins import build_plugin_manager, plugin_summary, registered_providers
from wahub.core.work.lifecycle import SHUTDOWN_GRACE


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except (ConfigError, PluginError) as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    except StartupError as exc:
        print(f"wahub: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wahub", description="Self-hosted WhatsApp integration hub.")
    parser.add_argument("--version", action="version", version=f"wahub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    config_help = "configuration file (default: the embedded defaults: SQLite, sandbox, no rules)"

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, help=config_help)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration exactly as 'run' does")
    check.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    check.set_defaults(handler=_check_config)
    for command in (run, check):
        command.add_argument(
            "-p",
            "--plugin",
            action="append",
            default=[],
            metavar="MODULE",
            help="also load the plugin module MODULE (importable name; repeatable), "
            "e.g. a plugin under development or wahub.testing.fake_provider",
        )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    common.add_argument("--provider", metavar="NAME", help="only this provider (default: every one that can)")
    common.add_argument("-p", "--plugin", action="append", default=[], metavar="MODULE", help="also load MODULE")
    templates = commands.add_parser(
        "templates", help="list, sync, create and delete message templates; plan and apply the templates directory"
    )
    actions = templates.add_subparsers(dest="action", metavar="ACTION", required=True)
    templates_cli.add_actions(actions, common)
    actions.add_parser("sync", parents=[common], help="make the templates table the provider's template list")
    actions.add_parser("list", parents=[common], help="show the templates stored for each provider")
    create = actions.add_parser("create", parents=[common], help="submit a template (Meta's create body as JSON)")
    create.add_argument("file", type=Path, help="JSON file with name, language, category, components")
    edit = actions.add_parser("edit", parents=[common], help="change a template's components or category")
    edit.add_argument("template_id", help="the template's id (see 'templates list' after a sync)")
    edit.add_argument("file", type=Path, help="JSON file with the new components and/or category")
    delete = actions.add_parser("delete", parents=[common], help="delete a template (all languages unless --id)")
    delete.add_argument("name")
    delete.add_argument("--id", help="only this language version (the template id)")
    profile = commands.add_parser("profile", help="the business profile of Cloud API numbers")
    profile_actions = profile.add_subparsers(dest="action", metavar="ACTION", required=True)
    profile_actions.add_parser("apply", parents=[common], help="send each provider's profile: block to WhatsApp")
    profile_actions.add_parser("show", parents=[common], help="print the business profile WhatsApp users see")
    webhook = commands.add_parser("webhook", help="register the webhook URL with a BSP (360dialog)")
    webhook_actions = webhook.add_subparsers(dest="action", metavar="ACTION", required=True)
    register = webhook_actions.add_parser(
        "register", parents=[common], help="point the BSP's webhook at URL, with the secret header"
    )
    register.add_argument("url", help="the public URL of /webhooks/<provider name>")
    number = providers_cli.add_parsers(commands, common)
    for command in (templates, profile, webhook, number):
        command.set_defaults(handler=_account)
    _inbox_parser(commands)
    operators.add_parser(commands)
    notify.add_parser(commands)
    deliveries.add_parser(commands)
    plugins = commands.add_parser("plugins", help="list loaded plugins and the hooks each implements")
    plugins.set_defaults(handler=_plugins)
    token = commands.add_parser("token", help="print a new random API token for wahub.api_tokens")
    token.set_defaults(handler=_token)

    chat = commands.add_parser(
        "chat",
        help="chat with the running daemon's sandbox from the terminal",
        description="Chat with your bot as a WhatsApp user of the sandbox. Each line read is sent as a message; "
        "a button's number taps that button. The input may be piped (echo hi | wahub chat): when it ends, the "
        "chat waits for the sandbox to confirm every line and for the bot's answers (see --wait).",
    )
    chat.add_argument("--url", default="http://127.0.0.1:8080", help="the daemon's address (default: %(default)s)")
    chat.add_argument("--user", default="15551230000", help="your simulated phone number (default: %(default)s)")
    chat.add_argument("--name", default="Terminal user", help="your display name (default: %(default)s)")
    chat.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="when the input ends, wait until the sandbox has confirmed every line, then until no bot message "
        "has come for SECONDS (default: 3 when the input is piped, 0 at a terminal)",
    )
    chat.set_defaults(handler=_chat)
    return parser


def _inbox_parser(commands: Any) -> None:
    store = store_options()
    inbox = commands.add_parser("inbox", help="inbox events that failed: list them, run them again")
    actions = inbox.add_subparsers(dest="action", metavar="ACTION", required=True)
    failed = actions.add_parser("failed", parents=[store], help="list the events that gave up, oldest first")
    failed.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    retry = actions.add_parser("retry", parents=[store], help="put failed events back in the queue")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="the events' ids (see 'inbox failed')")
    retry.add_argument("--all", action="store_true", help="every failed event")
    inbox.set_defaults(handler=_inbox)


def _check_config(args: argparse.Namespace) -> int:
    load(args.config, plugin_manager(args))
    print(f"{args.config}: configuration is valid")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    pm = build_plugin_manager()
    for name, hooks in plugin_summary(pm):
        print(name)
        for hook in hooks:
            print(f"    {hook}")
    print(f"providers: {', '.join(sorted(registered_providers(pm))) or '(none)'}")
    return 0


def _token(_args: argparse.Namespace) -> int:
    # 32 random bytes: 43 URL-safe characters, far over the 16 that api_tokens requires.
    print(secrets.token_urlsafe(32))
    return 0


def _run(args: argparse.Namespace) -> int:
    pm = plugin_manager(args)
    config = load(args.config, pm)
    level = getattr(logging, config["wahub"]["log_level"].upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        # Libraries narrate their own start-up at INFO; wahub's lines are what matters.
        for library in ("alembic", "apscheduler", "aiosqlite", "sqlalchemy"):
            logging.getLogger(library).setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    asyncio.run(serve(config, pm))
    return 0


async def serve(config: dict[str, Any], pm: pluggy.PluginManager) -> None:
    """Run the daemon until SIGTERM or SIGINT, then shut down gracefully: stop
    accepting connections, let requests and work in progress finish (each
    stage has its own time limit), then close."""
    from wahub.core.http.serving import GuardedSite, make_runner
    from wahub.core.runtime.app import create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = config["wahub"]["http"]
    host, port = str(http["host"]), int(http["port"])
    # Bind first: a taken port must stop start-up before anything touches the database.
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    app = create_app(config, pm=pm)
    runner = make_runner(app, http, access_log=None, shutdown_timeout=SHUTDOWN_GRACE["requests"])
    logger = logging.getLogger("wahub")
    try:
        try:
            await runner.setup()
        except Exception as exc:
            logger.debug("start-up failed", exc_info=True)
            raise StartupError(f"start-up failed: {exc}") from exc
        await GuardedSite(runner, sock, http).start()
        pages = []
        if any(p["platform"] == "sandbox" for p in config["providers"]):
            pages.append("chat with the sandbox at /sandbox")
        if config.get("inbox", {}).get("enabled"):
            pages.append("answer as an operator at /inbox")
        where = f" ({', '.join(pages)})" if pages else ""
        logger.info("wahub %s listening on http://%s:%s%s", __version__, host, port, where)
        # Everything built at start-up lives as long as the process: keep it out of
        # the cyclic collector, whose full passes would otherwise stall requests.
        gc.collect()
        gc.freeze()
        await stop.wait()
    finally:
        logger.info("shutting down")
        await runner.cleanup()
        sock.close()


#: For each account command, the provider method it needs.
_ACCOUNT_METHODS = {
    ("templates", "sync"): "sync_templates",
    ("templates", "list"): "sync_templates",
    ("templates", "create"): "create_template",
    ("templates", "edit"): "edit_template",
    ("templates", "delete"): "delete_template",
    ("profile", "apply"): "apply_profile",
    ("profile", "show"): "business_profile",
    ("webhook", "register"): "register_webhook",
    ("number", "register"): "register_number",
    ("number", "pin"): "set_two_step_pin",
}


#: Commands that change one account: never run on every provider at once.
_ONE_PROVIDER = frozenset(
    {"create_template", "edit_template", "delete_template", "register_webhook", "register_number", "set_two_step_pin"}
)


def _account(args: argparse.Namespace) -> int:
    """``wahub templates|profile|webhook ...``: one call per provider that offers it."""
    pm = plugin_manager(args)
    config = load(args.config, pm)
    definition = None
    if args.command == "templates" and args.action in ("create", "edit"):
        try:
            definition = json.loads(args.file.read_text())
        except (OSError, ValueError) as exc:
            raise StartupError(f"{args.file}: cannot read the template: {exc}") from exc
    if args.command == "number":
        args.pin = providers_cli.read_pin(args.pin)
    return asyncio.run(_account_calls(args, config, pm, definition))


async def _account_calls(
    args: argparse.Namespace, config: dict[str, Any], pm: pluggy.PluginManager, definition: Any
) -> int:
    from wahub.core.errors import StorageLocked
    from wahub.core.runtime.app import command_hub

    method = _ACCOUNT_METHODS[(args.command, args.action)]
    try:
        async with command_hub(config, pm) as hub:
            return await _account_each(args, hub, method, definition)
    except StorageLocked as exc:
        raise StartupError(
            f"{exc}. Stop the daemon first, or ask it: POST /api/v1/providers/<name>/templates/sync "
            "or /profile/apply (see docs/operations.md)"
        ) from None


async def _account_each(args: argparse.Namespace, hub: Any, method: str, definition: Any) -> int:
    from wahub.core.errors import ProviderError

    chosen = [p for p in hub.providers.values() if args.provider in (None, p.name)]
    if args.provider and not chosen:
        raise StartupError(f"no provider named {args.provider!r} in {args.config}")
    able = [p for p in chosen if hasattr(p, method)]
    if not able:
        raise StartupError(f"no provider here can do '{args.command} {args.action}'")
    if method in _ONE_PROVIDER and len(able) > 1:
        names = ", ".join(p.name for p in able)
        raise StartupError(f"'{args.command} {args.action}' acts on one provider: add --provider (one of {names})")
    arguments: tuple[Any, ...] = {
        "create_template": (definition,),
        "edit_template": (getattr(args, "template_id", None), definition),
        "delete_template": (getattr(args, "name", None), getattr(args, "id", None)),
        "register_webhook": (getattr(args, "url", None),),
        **dict.fromkeys(("register_number", "set_two_step_pin"), (getattr(args, "pin", None),)),
    }.get(method, ())
    failed = 0
    for provider in able:
        if args.action == "list":
            for row in await hub.storage.policy.templates(provider.name):
                fields = (provider.name, row["name"], row["language"], row["category"], row["status"])
                print("\t".join((*fields, row["quality"] or "-", row["external_id"] or "-")))
            continue
        options = {"files_from": args.file.parent} if method == "create_template" else {}
        try:
            result = await getattr(provider, method)(*arguments, **options)
        except ProviderError as exc:
            print(f"{provider.name}: {exc} (code {exc.code})", file=sys.stderr)
            failed += 1
            continue
        print(f"{provider.name}: {'done' if result is None else json.dumps(result, ensure_ascii=False)}")
    return 1 if failed else 0


def _inbox(args: argparse.Namespace) -> int:
    """``wahub inbox failed|retry``: straight on the database (the daemon's REST API serves a running one)."""
    if args.action == "retry" and bool(args.ids) == bool(args.all):
        print("wahub inbox retry: name the events' ids, or --all (not both)", file=sys.stderr)
        return 2
    config = load(args.config, plugin_manager(args))
    return asyncio.run(_inbox_calls(args, config))


async def _inbox_calls(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from wahub.core.errors import StorageLocked
    from wahub.core.inbound.failures import failed_event
    from wahub.core.storage.store import Storage

    try:
        storage = await Storage.open(config["wahub"]["database"], media=config["wahub"]["media"])
    except StorageLocked as exc:
        raise StartupError(
            f"{exc}. Stop the daemon first, or ask it: GET /api/v1/inbox/failed, "
            "POST /api/v1/inbox/<id>/retry (see docs/operations.md)"
        ) from None
    try:
        if args.action == "failed":
            rows = await storage.failed_inbox(max(args.limit, 1))
            if not rows:
                print("no failed inbox events", file=sys.stderr)
            for row in rows:
                event = failed_event(row)
                received = datetime.fromtimestamp(event["received_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                fields = (event["id"], event["provider"], event["kind"], event["attempts"], received)
                print("\t".join(str(field) for field in (*fields, event["contact"], " ".join(event["error"].split()))))
            return 0
        reopened = await storage.retry_failed_inbox(None if args.all else args.ids)
    finally:
        await storage.close()
    print(f"{len(reopened)} events back in the queue{': ' if reopened else ''}{', '.join(map(str, reopened))}")
    missing = sorted(set(args.ids) - set(reopened))
    if missing:
        print(f"not failed, or no such event: {', '.join(map(str, missing))}", file=sys.stderr)
    return 1 if missing else 0


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return seconds


def _chat(args: argparse.Namespace) -> int:
    from wahub.chat import PIPED_WAIT, ChatError, run_chat
    from wahub.chat_text import Screen, stdin_lines

    wait = args.wait
    if wait is None:
        # At a terminal the person has read the answers before ending with Ctrl-D.
        wait = 0.0 if sys.stdin.isatty() else PIPED_WAIT
    try:
        screen = Screen.for_terminal()
        asyncio.run(run_chat(args.url.rstrip("/"), args.user, args.name, stdin_lines(), screen, wait=wait))
    except ChatError as exc:
        print(f"wahub chat: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
