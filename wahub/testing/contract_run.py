"""Running the cases of a provider contract suite (``wahub.testing.contract``).

Each case builds the provider as the daemon does, ``Provider(hub, entry)``, on a
real ``Hub`` with a real SQLite storage (outbound and error cases) and a real
HTTP client. Outbound and error cases point the entry's base URL at a
``RecordingServer`` on 127.0.0.1, which records every request and gives the
case's ``answer``. The runner calls neither ``start`` nor ``stop``: what they
open (a background refresh, say) would add requests of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pluggy
import voluptuous as vol
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from wahub.core.errors import ProviderError, WebhookError
from wahub.core.hub import Hub
from wahub.core.metrics import Metrics
from wahub.core.models import Event, OutgoingMessage, event_to_json
from wahub.core.plugins import build_plugin_manager
from wahub.core.provider import Provider, WebhookRequest
from wahub.core.storage.store import Storage
from wahub.testing import serve_on_loopback
from wahub.testing.contract_format import ContractCase, ContractSuite, Recorded, mismatch


class CaseFailed(AssertionError):
    """A provider that does not do what a case says; the message says how."""


def run_case(suite: ContractSuite, case: ContractCase, tmp_path: Path) -> None:
    """Run one case; raise ``CaseFailed`` (shown without a traceback) when it fails."""
    __tracebackhide__ = True
    problem = asyncio.run(_run(suite, case, tmp_path))
    if problem is not None:
        import pytest

        pytest.fail(f"{suite.provider.__name__} {case.id} ({case.source}):\n{problem}", pytrace=False)


async def _run(suite: ContractSuite, case: ContractCase, tmp_path: Path) -> str | None:
    try:
        if case.table == "inbound":
            return await _inbound(suite, case)
        return await _sending(suite, case, tmp_path)
    except CaseFailed as exc:
        return str(exc)


# -- the provider and its host --------------------------------------------------


@functools.cache
def _plugin_manager() -> pluggy.PluginManager:
    return build_plugin_manager(load_entry_points=False)


@asynccontextmanager
async def built_provider(
    suite: ContractSuite, *, base_url: str | None = None, database: Path | None = None
) -> AsyncIterator[Provider]:
    """The suite's provider on a hub of its own (with storage in ``database`` if given)."""
    entry = dict(suite.config)
    if base_url is not None and suite.base_url_key:
        entry[suite.base_url_key] = base_url
    try:
        config = suite.provider.CONFIG_SCHEMA(entry)
    except vol.Invalid as exc:
        raise CaseFailed(f"the suite's config is not a valid {suite.provider.PLATFORM} entry: {exc}") from exc
    hub = Hub(config={"providers": [config]}, pm=_plugin_manager(), metrics=Metrics())
    hub.http = aiohttp.ClientSession()
    try:
        if database is not None:
            hub.storage = await Storage.open(f"sqlite:///{database}")
        provider = suite.provider(hub, config)
        hub.providers[provider.name] = provider
        if suite.setup is not None:
            await suite.setup(provider)
        yield provider
    finally:
        await hub.drain_background(0.5)
        await hub.http.close()
        if database is not None and hasattr(hub, "storage"):
            await hub.storage.close()


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records every request and answers each with
    ``status`` and ``json`` (or ``text``)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> RecordingServer:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> web.Response:
        raw = await request.read()
        text = raw.decode("utf-8", "replace")
        try:
            body = await request.json() if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(Recorded(request.method, request.path, dict(request.query), headers, body, text))
        status = int(self.answer.get("status", 200))
        if "json" in self.answer:
            return web.json_response(self.answer["json"], status=status)
        return web.Response(status=status, text=self.answer.get("text", ""))


# -- inbound --------------------------------------------------------------------


def _body(case: ContractCase) -> bytes:
    data = case.data
    if "body_file" in data:
        path: Path = (case.base or Path.cwd()) / str(data["body_file"])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CaseFailed(f"cannot read body_file {path}: {exc.strerror or exc}") from exc
    if "body_text" in data:
        return str(data["body_text"]).encode()
    if "body_form" in data:
        pairs = [(key, value) for key, values in data["body_form"].items() for value in _listed(values)]
        return urlencode(pairs).encode()
    return json.dumps(data["body"]).encode()


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


#: The URL a case's webhook is sent to when it names none (after the entry's
#: ``public_base_url`` when it has one).
CASE_HOST = "https://wahub.example"


def _seen_url(suite: ContractSuite, url: str) -> str:
    """The URL the daemon sees for a webhook sent to ``url``: behind the entry's
    ``public_base_url`` (a proxy, with any path prefix) it is the daemon's own
    address and the path below that base."""
    base = str(suite.config.get("public_base_url") or "").rstrip("/")
    if base and url.startswith(base):
        return "http://127.0.0.1:8080" + url[len(base) :]
    return url


def _url(suite: ContractSuite, case: ContractCase) -> str:
    if "url" in case.data:
        return str(case.data["url"])
    base = str(suite.config.get("public_base_url") or CASE_HOST).rstrip("/")
    return f"{base}/webhooks/{suite.config['name']}"


def _view(event: Event, expected: dict[str, Any]) -> dict[str, Any]:
    """The event's values for the keys ``expected`` names: fields, properties and
    methods without arguments (``text``), dotted to look inside (``raw.message.id``)."""
    view: dict[str, Any] = {}
    for key in expected:
        first, *rest = key.split(".")
        value: Any = getattr(event, first, _MISSING) if not first.startswith("_") else _MISSING
        if callable(value):
            try:
                value = value()
            except TypeError:
                value = f"<{type(event).__name__}.{first} takes arguments>"
        for part in rest:
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        view[key] = value if value is not _MISSING else f"<{type(event).__name__} has no {key}>"
    return view


_MISSING: Any = object()


async def _inbound(suite: ContractSuite, case: ContractCase) -> str | None:
    data, body = case.data, _body(case)
    headers = CIMultiDict(data["headers"])
    url = _url(suite, case)
    sign = data.get("sign")
    if sign is True:
        if suite.signer is None:
            return "the case says sign: true, but the suite has no signer"
        # Headers the case gives win over the signer's: that is how a case forges one.
        signed = suite.signer(WebhookRequest(url, CIMultiDictProxy(headers), body, "127.0.0.1"))
        for key, value in signed.items():
            headers.setdefault(key, value)
    elif sign:
        headers[sign["header"]] = sign["prefix"] + hmac.new(sign["secret"].encode(), body, hashlib.sha256).hexdigest()
    async with built_provider(suite) as provider:
        seen = WebhookRequest(_seen_url(suite, url), CIMultiDictProxy(headers), body, "127.0.0.1")
        verified = provider.verify_webhook(seen)
        if verified != data["verified"]:
            what = "accepted a webhook it must refuse" if verified else "refused the webhook's signature"
            return f"verify_webhook {what} (url: {url}, headers: {dict(headers)})"
        if not verified:
            return None
        try:
            events = provider.parse_webhook(body)
        except WebhookError as exc:
            if "error" in data and data["error"] in str(exc):
                return None
            expected = f"the events {data['events']}" if "events" in data else f"WebhookError with {data['error']!r}"
            return f"parse_webhook raised WebhookError({str(exc)!r}); expected {expected}"
    if "error" in data:
        return f"parse_webhook returned {len(events)} events; expected WebhookError with {data['error']!r}"
    wanted: list[dict[str, Any]] = data.get("events", [])
    views = [_view(event, want) for event, want in zip(events, wanted, strict=False)]
    views += [event_to_json(event) for event in events[len(wanted) :]]
    found = mismatch(
        "the parsed events differ from the expected ones (path: expected, got):", wanted, views, show=False
    )
    if found is None:
        return None
    return found + "\nall public fields of the parsed events:\n" + _json([event_to_json(e) for e in events])


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    return "\n".join("    " + line for line in text.splitlines()[:300])


# -- outbound and errors --------------------------------------------------------


async def _sending(suite: ContractSuite, case: ContractCase, tmp_path: Path) -> str | None:
    data = case.data
    try:
        message = OutgoingMessage.from_json(data["message"])
    except (KeyError, TypeError) as exc:
        return f"message is not an OutgoingMessage: {exc!r}"
    if suite.capture is None and not suite.base_url_key:
        return "the suite names no base_url_key (the config key of the API's URL) and no capture"
    if suite.capture is not None and "answer" in data:
        return "answer has no effect on a suite with a capture: nothing is sent over HTTP"
    server = None
    if suite.capture is None:
        server = await RecordingServer(data.get("answer", {"status": 200, "json": {}})).start()
    try:
        async with built_provider(
            suite, base_url=server.url if server else None, database=tmp_path / "contract.db"
        ) as provider:
            outcome: Any
            if suite.capture is not None:
                async with suite.capture(provider, message) as recorded:
                    outcome = await _send(provider, message)
            else:
                assert server is not None
                outcome = await _send(provider, message)
                recorded = server.requests
            if case.table == "errors":
                return _check_error(case, outcome)
    finally:
        if server is not None:
            await server.close()
    if isinstance(outcome, ProviderError):
        return f"send raised ProviderError({str(outcome)!r}, code={outcome.code!r}); the requests:\n" + _json(
            [r.shown() for r in recorded]
        )
    return _check_requests(suite, case, recorded) or _check_result(case, outcome)


async def _send(provider: Provider, message: OutgoingMessage) -> Any:
    try:
        return await provider.send(message)
    except ProviderError as exc:
        return exc


def _check_requests(suite: ContractSuite, case: ContractCase, recorded: list[Recorded]) -> str | None:
    wanted = case.data.get("requests") or ([case.data["request"]] if "request" in case.data else [])
    views = []
    for got, want in zip(recorded, wanted, strict=False):
        view: dict[str, Any] = {"method": got.method, "path": got.path}
        if "json" in want:
            view["json"] = got.json if got.json is not None else got.text
        if "query" in want:
            view["query"] = {key: got.query.get(key, "<absent>") for key in want["query"]}
        if "headers" in want:
            view["headers"] = {key: got.headers.get(key.lower(), "<absent>") for key in want["headers"]}
        views.append(view)
    views += [r.shown() for r in recorded[len(wanted) :]]
    found = mismatch("the requests differ from the expected ones (path: expected, got):", wanted, views)
    if found is not None:
        return found
    problems = [f"{r.method} {r.path}: {line}" for r in recorded for line in (suite.check_request or _none)(r)]
    if problems:
        return "the requests were refused by the suite's check_request:\n" + "\n".join(f"  {p}" for p in problems)
    return None


def _none(_request: Recorded) -> list[str]:
    return []


def _check_result(case: ContractCase, result: Any) -> str | None:
    if "result" not in case.data:
        return None
    return mismatch("the SendResult differs:", case.data["result"], _given_fields(result))


def _given_fields(result: Any) -> dict[str, Any]:
    """The fields of a ``SendResult`` as a case writes them: those left at their
    default (no ``identities`` reported) are left out, so a case names only what
    the answer gave."""
    given = dataclasses.asdict(result)
    for field in dataclasses.fields(result):
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if default is not dataclasses.MISSING and given[field.name] == default:
            del given[field.name]
    return given


def _check_error(case: ContractCase, outcome: Any) -> str | None:
    meaning = case.data["meaning"]
    if not isinstance(outcome, ProviderError):
        return f"send returned {outcome!r}; expected a ProviderError meaning {meaning['kind']}"
    given = outcome.meaning  # what the engine acts on
    expected: dict[str, Any] = {"kind": meaning["kind"], "lesson": meaning["lesson"]}
    actual: dict[str, Any] = {"kind": str(given.kind), "lesson": None if given.lesson is None else str(given.lesson)}
    if "code" in meaning:
        expected["code"], actual["code"] = meaning["code"], outcome.code
    for text in meaning["says"]:
        expected[f"says {text!r}"] = True
        actual[f"says {text!r}"] = text in str(outcome)
    found = mismatch(f"the error means something else ({type(outcome).__name__}: {outcome}):", expected, actual)
    return found
