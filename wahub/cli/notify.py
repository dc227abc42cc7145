"""``wahub notify``: send a template to many contacts through the running
daemon's REST API (``POST /api/v1/notifications``), then follow it.

The request carries an Idempotency-Key (``--key``, else one made from its
content and the day's date), so running the same command again the same day
shows the first notification instead of sending twice, while next week's
newsletter is a new one. At a terminal the progress is one line redrawn in
place; piped, it is a plain line whenever the counts change. Ctrl-C stops
following, not the notification. A daemon that does not answer in time is
told apart from one that is not running: the notification may exist then.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from wahub.cli.common import StartupError, load, plugin_manager, store_options

#: Columns of a ``--csv`` file that hold the address; every other column is a parameter.
ADDRESS_COLUMNS = ("phone", "to")
#: sysexits.h EX_TEMPFAIL: the daemon did not answer in time; try again later.
EX_TEMPFAIL = 75


class _Refused(Exception):
    """The daemon refused the request, or the input is wrong: the reason to print."""


class _NoAnswer(Exception):
    """The daemon took the request but did not answer in time: the reason to print."""


def add_parser(commands: Any) -> None:
    notify = commands.add_parser(
        "notify",
        parents=[store_options()],
        help="send a template to many contacts through the running daemon, and follow it",
        description="Talks to the running daemon's REST API (wahub.http, or --url) with --token, "
        "else $WAHUB_API_TOKEN, else the first of wahub.api_tokens. Running the same command again "
        "the same day (or with the same --key) shows the first notification: it never sends twice.",
    )
    notify.add_argument("--template", required=True, metavar="NAME", help="the approved template to send")
    audience = notify.add_mutually_exclusive_group(required=True)
    audience.add_argument("--to", action="append", metavar="ADDRESS", help="a recipient (repeat for more)")
    audience.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="recipients in a column phone (or to); other columns are each recipient's parameters",
    )
    audience.add_argument("--tag", action="append", metavar="TAG", help="contacts having every --tag given")
    notify.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter for everyone (header=..., buttons.0=... for a button's)",
    )
    notify.add_argument("--language", metavar="CODE", help="the template's language (default: each contact's)")
    notify.add_argument("--send-at", metavar="TIME", help="not before this ISO 8601 time with an offset")
    notify.add_argument("--provider", metavar="NAME", help="the provider to send through (default: the first)")
    notify.add_argument("--dry-run", action="store_true", help="show who would get it and who not; send nothing")
    notify.add_argument("--url", help="the daemon's address (default: from wahub.http)")
    notify.add_argument("--token", help="an API token (default: $WAHUB_API_TOKEN, else the config's first)")
    notify.add_argument(
        "--key",
        metavar="KEY",
        help="the Idempotency-Key: the same key never sends twice (default: made from the request and today's date)",
    )
    notify.add_argument("--every", type=float, default=2.0, metavar="SECONDS", help="between progress updates")
    notify.add_argument(
        "--timeout", type=float, default=120.0, metavar="SECONDS", help="how long to wait for each answer"
    )
    notify.set_defaults(handler=_notify)


def _parameters(pairs: list[str]) -> dict[str, Any]:
    """The parameters object of the ``--param`` pairs; ``buttons.N=VALUE`` is button N's."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise _Refused(f"--param {pair!r}: write it as KEY=VALUE (e.g. --param 1=Ana)")
        group, dot, index = key.partition(".")
        if group == "buttons" and dot:
            if not index.isdigit():
                raise _Refused(f"--param {pair!r}: a button is named by its index, as in buttons.0=42")
            parameters.setdefault("buttons", {})[index] = value
        else:
            parameters[key] = value
    return parameters


def _read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The addresses of a CSV file and each one's parameters (its non-empty other columns)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            column = next((name for name in ADDRESS_COLUMNS if name in (reader.fieldnames or ())), None)
            if column is None:
                raise _Refused(f"{path}: no column named phone or to in its first line")
            addresses, per_recipient = [], {}
            for line, row in enumerate(reader, start=2):
                address = (row.get(column) or "").strip()
                if not address:
                    raise _Refused(f"{path}:{line}: the {column} column is empty")
                addresses.append(address)
                extra = {key: value for key, value in row.items() if key != column and key and value}
                if extra:
                    per_recipient[address] = extra
    except OSError as exc:
        raise _Refused(f"cannot read {path}: {exc.strerror}") from None
    if not addresses:
        raise _Refused(f"{path}: no recipients below the header line")
    return addresses, per_recipient


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /api/v1/notifications`` body the options describe."""
    body: dict[str, Any] = {"template": args.template}
    if args.csv is not None:
        body["to"], per_recipient = _read_csv(args.csv)
        if per_recipient:
            body["per_recipient"] = per_recipient
    elif args.to:
        body["to"] = args.to
    else:
        body["segment"] = {"tags": args.tag}
    parameters = _parameters(args.param)
    if parameters:
        body["parameters"] = parameters
    for option, key in (("language", "language"), ("send_at", "send_at"), ("provider", "provider")):
        if getattr(args, option) is not None:
            body[key] = getattr(args, option)
    if args.dry_run:
        body["dry_run"] = True
    return body


def idempotency_key(body: dict[str, Any], today: dt.date) -> str:
    """A key made from the request's content and ``today`` (UTC): the same
    command gives the same key that day, and a new one the next."""
    content = {key: value for key, value in body.items() if key != "dry_run"}
    content["date"] = today.isoformat()
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"cli-{digest[:40]}"


def _base_url(args: argparse.Namespace, config: dict[str, Any]) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    http = config["wahub"]["http"]
    host = "127.0.0.1" if http["host"] in ("0.0.0.0", "::", "") else http["host"]
    return f"http://{host}:{http['port']}"


def _token(args: argparse.Namespace, config: dict[str, Any]) -> str:
    token = args.token or os.environ.get("WAHUB_API_TOKEN")
    if token:
        return str(token)
    tokens = config["wahub"]["api_tokens"]
    if not tokens:
        raise _Refused("no API token: give --token, set WAHUB_API_TOKEN, or add one to wahub.api_tokens")
    return str(tokens[0])


class Client:
    """Calls of the daemon's REST API with a bearer token, each answered within ``timeout`` seconds."""

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """The answer's status and JSON body; ``_Refused`` for an error answer,
        ``StartupError`` when nothing listens, ``_NoAnswer`` when the daemon is slow."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _Refused(self._refusal(exc)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            # Connecting that fails comes wrapped in a URLError; a bare time-out came after the request was sent.
            if isinstance(exc, TimeoutError):
                raise _NoAnswer(
                    f"the daemon at {self.url} took the request but did not answer within {self.timeout:g} s "
                    f"({method} {path}); it may still be doing it: run the same command again (same --key) "
                    "to see what it did"
                ) from None
            raise StartupError(
                f"no wahub daemon answers at {self.url} ({reason}): start it with 'wahub run', or give --url"
            ) from None

    def _refusal(self, exc: urllib.error.HTTPError) -> str:
        try:
            found = json.loads(exc.read())["error"]
            code, message = found["code"], found["message"]
        except (ValueError, KeyError, TypeError):
            code, message = str(exc.code), exc.reason
        if exc.code == 401:
            return f"the daemon at {self.url} refused the API token ({message}): check --token or WAHUB_API_TOKEN"
        return f"the notification was refused: {code}: {message}"


def _refusals(refused: dict[str, int] | None) -> str:
    if refused is None:
        return "refusals counted as it is written"
    if not refused:
        return "none refused"
    total = sum(refused.values())
    return f"{total} refused (" + ", ".join(f"{reason}: {count}" for reason, count in sorted(refused.items())) + ")"


def progress_line(found: dict[str, Any]) -> str:
    """One notification's progress: its state and messages by status."""
    counts = found["counts"]
    failed = sum(counts["failed"].values())
    return (
        f"notification {found['id']} {found['state']}: {found['written']}/{found['recipients']} written, "
        f"queued {counts['queued']}, sent {counts['sent']}, delivered {counts['delivered']}, "
        f"read {counts['read']}, failed {failed}, cancelled {counts['cancelled']}"
    )


def finished(found: dict[str, Any]) -> bool:
    """Whether nothing of the notification is queued any more."""
    return found["state"] in ("queued", "cancelled") and found["counts"]["queued"] == 0


def _follow(client: Client, notification_id: int, every: float) -> None:
    at_terminal, shown = sys.stdout.isatty(), ""
    while True:
        _status, found = client.call("GET", f"/api/v1/notifications/{notification_id}")
        line = progress_line(found)
        if at_terminal:
            print(f"\r\033[K{line}", end="", flush=True)
        elif line != shown:
            print(line, flush=True)
        shown = line
        if finished(found):
            break
        time.sleep(every)
    if at_terminal:
        print()
    failed = found["counts"]["failed"]
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(failed.items()))
    print(f"done: {found['written']} messages, {_refusals(found['refused'])}" + (f"; failed {codes}" if codes else ""))


def _notify(args: argparse.Namespace) -> int:
    try:
        body = request_body(args)
        config = load(args.config, plugin_manager(args))
        client = Client(_base_url(args, config), _token(args, config), args.timeout)
        key = args.key or idempotency_key(body, dt.datetime.now(dt.UTC).date())
        status, answer = client.call("POST", "/api/v1/notifications", body, {"Idempotency-Key": key})
    except _Refused as exc:
        print(f"wahub notify: {exc}", file=sys.stderr)
        return 1
    except _NoAnswer as exc:
        print(f"wahub notify: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    summary = f"{answer['recipients']} recipients, {_refusals(answer['refused'])}"
    if answer["id"] is None:
        print(f"dry run: {summary}; nothing was sent")
        return 0
    if status == 200:
        print(f"already sent as notification {answer['id']}; showing its progress", flush=True)
    print(f"notification {answer['id']} ({answer['state']}): {summary}", flush=True)
    try:
        _follow(client, answer["id"], args.every)
    except KeyboardInterrupt:
        cancel = f"{client.url}/api/v1/notifications/{answer['id']}/cancel"
        print(
            f"\nstopped following; notification {answer['id']} goes on. To cancel it: "
            f'curl -X POST -H "Authorization: Bearer $WAHUB_API_TOKEN" {cancel}',
            file=sys.stderr,
        )
    except _Refused as exc:
        print(f"wahub notify: {exc}", file=sys.stderr)
        return 1
    except _NoAnswer as exc:
        print(f"wahub notify: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0
