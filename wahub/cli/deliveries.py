"""``wahub deliveries``: the integration events given (or still to be given) to
the ``crm:`` entries, straight on the database: list and show them, replay
them, and re-enable an entry that a 410 disabled.

On SQLite this works while the daemon is stopped (the daemon holds the file);
the REST API (``/api/v1/deliveries``, ``/api/v1/crm``) serves a running one.
On PostgreSQL it works beside running daemons: they look at the table every
second, so what a retry or an enable makes due is delivered within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from wahub.cli.common import StartupError, load, plugin_manager, store_options

#: A delivery's states, as ``wahub.core.storage.deliveries.STATES`` (not imported
#: here: the storage's imports would slow every ``wahub`` command's start).
STATES = ("pending", "delivered", "failed")

#: Longest error shown in a table row (``show`` and ``--json`` give it whole).
TABLE_ERROR = 60
MAX_LISTED = 1000

_COLUMNS = ("ID", "ENDPOINT", "TYPE", "EVENT", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "CREATED", "LAST")


class _Refused(Exception):
    """A deliveries command refused, with the reason to print."""


def add_parser(commands: Any) -> None:
    store = store_options()
    deliveries = commands.add_parser(
        "deliveries",
        help="events given to the crm: entries: list, show, retry; enable an entry; each entry's counts",
        description="Works on the configured database. On SQLite, stop the daemon first (or use the REST API: "
        "/api/v1/deliveries); on PostgreSQL, running daemons pick up what it changes within a second.",
    )
    actions = deliveries.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[store], help="deliveries, newest first")
    listing.add_argument("--endpoint", metavar="NAME", help="only this crm: entry's")
    listing.add_argument("--state", choices=STATES, help="only those in this state")
    listing.add_argument("--contact", type=_positive, metavar="ID", help="only this contact's")
    listing.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help=f"at most N, up to {MAX_LISTED} (default: %(default)s)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", parents=[store], help="one delivery with the event it carries")
    show.add_argument("id", type=_positive, metavar="ID")
    retry = actions.add_parser(
        "retry", parents=[store], help="deliver again at once, with a fresh retry schedule (whatever the state)"
    )
    retry.add_argument("ids", nargs="*", type=_positive, metavar="ID", help="the deliveries' ids (see 'list')")
    retry.add_argument("--failed", action="store_true", help="every failed delivery")
    retry.add_argument("--endpoint", metavar="NAME", help="with --failed: only this crm: entry's")
    enable = actions.add_parser("enable", parents=[store], help="deliver again to an entry a 410 Gone disabled")
    enable.add_argument("name", help="the crm: entry's name")
    actions.add_parser("endpoints", parents=[store], help="each crm: entry: its deliveries by state, disabled or not")
    deliveries.set_defaults(handler=_deliveries)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id: a whole number from 1")
    return int(text)


def _deliveries(args: argparse.Namespace) -> int:
    """``wahub deliveries list|show|retry|enable|endpoints``: straight on the database."""
    prefix = f"wahub deliveries {args.action}"
    if args.action == "retry":
        if bool(args.ids) == bool(args.failed):
            print(f"{prefix}: name the deliveries' ids, or --failed (not both)", file=sys.stderr)
            return 2
        if args.endpoint is not None and not args.failed:
            print(f"{prefix}: --endpoint goes with --failed", file=sys.stderr)
            return 2
    if args.action == "list" and args.limit > MAX_LISTED:
        print(f"{prefix}: --limit is at most {MAX_LISTED}", file=sys.stderr)
        return 2
    config = load(args.config, plugin_manager(args))
    try:
        return asyncio.run(_calls(args, config))
    except _Refused as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 1


async def _calls(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from wahub.core.errors import StorageLocked
    from wahub.core.storage.store import Storage

    try:
        storage = await Storage.open(config["wahub"]["database"], media=config["wahub"]["media"])
    except StorageLocked as exc:
        raise StartupError(
            f"{exc}. Stop the daemon first, or ask it: GET /api/v1/deliveries, POST /api/v1/deliveries/retry, "
            "POST /api/v1/crm/<name>/enable (see docs/integrations/operations.md)"
        ) from None
    configured = {entry["name"]: entry for entry in config["crm"]}
    try:
        if args.action == "list":
            return await _list(args, storage, configured)
        if args.action == "show":
            return await _show(args, storage)
        if args.action == "retry":
            return await _retry(args, storage, configured)
        if args.action == "enable":
            return await _enable(args, storage, configured)
        return await _endpoints(storage, configured)
    finally:
        await storage.close()


def _known(name: str, names: Sequence[str]) -> None:
    if name not in names:
        listed = ", ".join(names) if names else "none: add one under crm: in the configuration"
        raise _Refused(f"no crm: entry named {name!r} (the entries: {listed})")


def _time(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last(row: dict[str, Any]) -> str:
    """Why the last attempt failed (its reason names the status, when there was one), or its status."""
    error = " ".join(str(row["last_error"] or "").split())
    if len(error) > TABLE_ERROR:
        error = error[: TABLE_ERROR - 1] + "…"
    return error or ("-" if row["last_status"] is None else str(row["last_status"]))


def _deliveries_count(number: int) -> str:
    return f"{number} {'delivery' if number == 1 else 'deliveries'}"


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` as lines of columns padded to the widest cell (the last one is not)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]) for row in rows
    ]


def _row(row: dict[str, Any], disabled: set[str]) -> tuple[str, ...]:
    # A disabled entry's pending deliveries wait for 'enable', whatever their next attempt says.
    waiting = row["state"] == "pending" and row["endpoint"] in disabled
    return (
        str(row["id"]),
        row["endpoint"],
        row["type"],
        row["event_id"],
        row["state"],
        str(row["attempts"]),
        "disabled" if waiting else _time(row["next_attempt_at"]),
        _time(row["created_at"]),
        _last(row),
    )


async def _list(args: argparse.Namespace, storage: Any, configured: dict[str, Any]) -> int:
    from wahub.core.http.deliveries import shown

    stored = await storage.deliveries.endpoints()
    if args.endpoint is not None:
        _known(args.endpoint, [*configured, *(name for name in stored if name not in configured)])
    rows, more = await storage.deliveries.listing(
        endpoint=args.endpoint, state=args.state, contact_id=args.contact, limit=args.limit
    )
    if args.json:
        for row in rows:
            print(json.dumps(shown(row), ensure_ascii=False))
    elif rows:
        disabled = {name for name, found in stored.items() if found["disabled"]}
        print("\n".join(table([_COLUMNS, *(_row(row, disabled) for row in rows)])))
    if not rows:
        print("no deliveries", file=sys.stderr)
    elif more is not None:
        print(f"the newest {len(rows)} shown; more with a larger --limit", file=sys.stderr)
    return 0


async def _show(args: argparse.Namespace, storage: Any) -> int:
    from wahub.core.http.deliveries import shown

    row = await storage.deliveries.get(args.id)
    if row is None:
        raise _Refused(f"no delivery {args.id} (see 'wahub deliveries list')")
    found = shown(row, payload=True)
    payload = found.pop("payload")
    for key, value in found.items():
        text = _time(value) if key.endswith("_at") else ("-" if value is None else str(value))
        print(f"{key}: {text}")
    print("payload:")
    print(json.dumps(payload, indent=2, ensure_ascii=False))
    return 0


async def _retry(args: argparse.Namespace, storage: Any, configured: dict[str, Any]) -> int:
    if args.endpoint is not None:
        _known(args.endpoint, list(configured))
    ids = list(dict.fromkeys(args.ids)) or None
    retried = await storage.deliveries.replay(ids=ids, endpoint=args.endpoint, now=time.time())
    missing = sorted(set(args.ids) - set(retried))
    if retried:
        print(f"{_deliveries_count(len(retried))} pending again, due now: {', '.join(map(str, retried))}")
        endpoints = {row["endpoint"] for row in [await storage.deliveries.get(found) for found in retried] if row}
        for name in sorted(endpoints):
            disabled = await storage.deliveries.disabled(name)
            if disabled is not None:
                print(f"{name} is disabled ({disabled[1]}): they wait for 'wahub deliveries enable {name}'")
    elif args.failed:
        where = f" to {args.endpoint}" if args.endpoint else ""
        print(f"no failed deliveries{where}: nothing to retry")
    if missing:
        print(f"no delivery {', '.join(map(str, missing))} (see 'wahub deliveries list')", file=sys.stderr)
    return 1 if missing else 0


async def _enable(args: argparse.Namespace, storage: Any, configured: dict[str, Any]) -> int:
    _known(args.name, list(configured))
    was_disabled = await storage.deliveries.enable(args.name, now=time.time())
    pending = (await storage.deliveries.endpoints()).get(args.name, {}).get("pending", 0)
    if was_disabled:
        print(f"enabled {args.name}: {_deliveries_count(pending)} pending, due now")
    else:
        print(f"{args.name} was not disabled: nothing changed")
    return 0


async def _endpoints(storage: Any, configured: dict[str, Any]) -> int:
    stored = await storage.deliveries.endpoints()
    names = [*configured, *sorted(name for name in stored if name not in configured)]
    if not names:
        print("no crm: entries in the configuration and no deliveries", file=sys.stderr)
        return 0
    lines = [("ENTRY", "PLATFORM", *(state.upper() for state in STATES), "STATE")]
    for name in names:
        found = stored.get(name, {})
        platform = configured[name]["platform"] if name in configured else "(not configured)"
        disabled = found.get("disabled")
        state = "enabled" if disabled is None else f"disabled since {_time(disabled['at'])}: {disabled['reason']}"
        counts = [str(found.get(key, 0)) for key in STATES]
        lines.append((name, platform, *counts, state))
    print("\n".join(table(lines)))
    if any(stored.get(name, {}).get("failed") for name in names):
        print("replay the failed ones with 'wahub deliveries retry --failed [--endpoint NAME]'", file=sys.stderr)
    return 0
