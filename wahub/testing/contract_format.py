"""The provider contract suite's fixture format: the three tables (``inbound``,
``outbound``, ``errors``), how their files load (``load_cases``) and how values
are compared (``mismatch``). The public entry point is ``wahub.testing.contract``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import voluptuous as vol
import yaml

from wahub.core.errors import ErrorKind, Lesson

if TYPE_CHECKING:
    from wahub.core.models import OutgoingMessage
    from wahub.core.provider import Provider, WebhookRequest

Table = Literal["inbound", "outbound", "errors"]
TABLES: tuple[Table, ...] = ("inbound", "outbound", "errors")
#: In an expected value, matches anything (a generated id, a timestamp).
ANY = "<any>"
MARKER = "provider_contract"


@dataclass
class Recorded:
    """One request the provider made (or, from a ``capture``, one thing it delivered)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    text: str = ""

    def shown(self) -> dict[str, Any]:
        """What a failure message shows of it."""
        shown: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.query:
            shown["query"] = self.query
        shown["json"] = self.json if self.json is not None else self.text
        return shown


#: ``capture(provider, message)``: an async context in which a send's deliveries
#: are recorded into the yielded list, for providers that do not send over HTTP.
Capture = Callable[["Provider", "OutgoingMessage"], AbstractAsyncContextManager[list[Recorded]]]
#: ``signer(request)``: the headers the provider would add to sign a webhook made
#: as ``request`` (its URL, headers and body), for cases with ``sign: true``.
Signer = Callable[["WebhookRequest"], Mapping[str, str]]
#: What is wrong with a request the provider made (e.g. against the API's schema), one line each.
RequestCheck = Callable[[Recorded], list[str]]


@dataclass
class ContractSuite:
    """How to build the provider under test. ``config`` is its ``providers:`` entry
    (validated with its ``CONFIG_SCHEMA``); the runner points ``base_url_key`` at its
    recording server. ``capture`` replaces the server for providers that do not
    send over HTTP; ``check_request`` vets every recorded request; ``setup`` runs
    on the provider before each case (e.g. to store a contact); ``signer`` signs
    the webhooks of cases with ``sign: true`` as the provider would. ``defaults``
    (per table) lies under every case of every fixture file, merged key by key
    through nested mappings: so one file of cases can serve two providers that
    differ only in, say, the request path."""

    provider: type[Provider]
    fixtures: Path | Mapping[str, Any] | list[Path | Mapping[str, Any]]
    config: Mapping[str, Any]
    base_url_key: str | None = None
    capture: Capture | None = None
    check_request: RequestCheck | None = None
    setup: Callable[[Provider], Awaitable[None]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    signer: Signer | None = None

    def cases(self) -> list[ContractCase]:
        sources = self.fixtures if isinstance(self.fixtures, list) else [self.fixtures]
        found: list[ContractCase] = []
        for source in sources:
            found += load_cases(source, defaults=self.defaults)
        seen: set[str] = set()
        for case in found:
            if case.id in seen:
                raise FixtureError(f"two cases are called {case.id!r}: give one another name")
            seen.add(case.id)
        return found


@dataclass
class ContractCase:
    """One row of a table; ``data`` is the row with its file's defaults merged in."""

    table: Table
    name: str
    data: dict[str, Any]
    source: str
    base: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.table}/{self.name}"


class FixtureError(Exception):
    """A fixture file that is not in the contract format."""


_SIGN = {vol.Required("header"): str, vol.Required("secret"): str, vol.Optional("prefix", default="sha256="): str}
_ANSWER = vol.Schema(
    {vol.Optional("status", default=200): int, vol.Optional("json"): object, vol.Optional("text"): str}
)
_REQUEST = vol.Schema(
    {
        vol.Required("method"): vol.All(str, vol.Upper),
        vol.Required("path"): str,
        vol.Optional("json"): object,
        vol.Optional("query"): {str: str},
        vol.Optional("headers"): {str: str},
    }
)
_NAME = vol.All(str, vol.Match(r"^[^/\s][^\s]*$", msg="no spaces or leading '/'"))
_COMMON: dict[Any, Any] = {vol.Required("name"): _NAME}
_MESSAGE: dict[Any, Any] = {vol.Required("to"): str, vol.Required("type"): str, vol.Extra: object}
_SCHEMAS: dict[Table, vol.Schema] = {
    "inbound": vol.Schema(
        vol.All(
            {
                **_COMMON,
                vol.Exclusive("body", "body"): object,
                vol.Exclusive("body_file", "body"): str,
                vol.Exclusive("body_text", "body"): str,
                vol.Exclusive("body_form", "body"): {str: vol.Any(str, [str])},
                vol.Optional("url"): str,
                vol.Optional("headers", default=dict): {str: str},
                vol.Optional("sign"): vol.Any(None, bool, _SIGN),
                vol.Optional("verified", default=True): bool,
                vol.Exclusive("events", "outcome"): [{vol.Required("kind"): str, vol.Extra: object}],
                vol.Exclusive("error", "outcome"): str,
            },
            vol.Any(
                vol.Schema({vol.Required("body"): object}, extra=vol.ALLOW_EXTRA),
                vol.Schema({vol.Required("body_file"): object}, extra=vol.ALLOW_EXTRA),
                vol.Schema({vol.Required("body_text"): object}, extra=vol.ALLOW_EXTRA),
                vol.Schema({vol.Required("body_form"): object}, extra=vol.ALLOW_EXTRA),
                msg="give the webhook as body, body_file, body_text or body_form",
            ),
        )
    ),
    "outbound": vol.Schema(
        {
            **_COMMON,
            vol.Required("message"): _MESSAGE,
            vol.Optional("answer"): _ANSWER,
            vol.Exclusive("request", "requests"): _REQUEST,
            vol.Exclusive("requests", "requests"): [_REQUEST],
            vol.Optional("result"): object,
        }
    ),
    "errors": vol.Schema(
        {
            **_COMMON,
            vol.Required("message"): _MESSAGE,
            vol.Optional("answer"): _ANSWER,
            vol.Required("meaning"): {
                vol.Required("kind"): vol.In([str(kind) for kind in ErrorKind]),
                vol.Optional("code"): vol.Any(None, vol.Coerce(str)),
                vol.Optional("lesson", default=None): vol.Any(None, vol.In([str(lesson) for lesson in Lesson])),
                vol.Optional("says", default=list): [str],
            },
        }
    ),
}


def load_cases(source: Path | Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None) -> list[ContractCase]:
    """The cases of a fixture file, of every ``*.yaml``/``*.yml``/``*.json`` file in a
    directory (sorted by name), or of a mapping holding the tables; ``defaults``
    (per table) lies under each case (see ``ContractSuite``)."""
    if isinstance(source, Mapping):
        return _cases(dict(source), "<python data>", None, defaults or {})
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        if not files:
            raise FixtureError(f"{path}: no .yaml, .yml or .json fixture files")
        return [case for file in files for case in load_cases(file, defaults=defaults)]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FixtureError(f"{path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise FixtureError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FixtureError(f"{path}: expected a mapping with inbound, outbound or errors tables")
    return _cases(data, str(path), path.parent, defaults or {})


def _cases(data: dict[str, Any], source: str, base: Path | None, suite: Mapping[str, Any]) -> list[ContractCase]:
    unknown = sorted(set(data) - {*TABLES, "defaults"})
    if unknown:
        raise FixtureError(f"{source}: unknown top-level keys {unknown}; use {list(TABLES)} and defaults")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise FixtureError(f"{source}: defaults must be a mapping of table name to what its cases share")
    cases = []
    for table in TABLES:
        rows = data.get(table) or []
        if not isinstance(rows, list):
            raise FixtureError(f"{source}: {table} must be a list of cases")
        for index, row in enumerate(rows):
            if isinstance(row, dict):
                merged = _under(suite.get(table) or {}, {**(defaults.get(table) or {}), **row})
            else:
                merged = row
            try:
                valid = _SCHEMAS[table](merged)
            except vol.Invalid as exc:
                name = row.get("name", f"#{index + 1}") if isinstance(row, dict) else f"#{index + 1}"
                raise FixtureError(f"{source}: {table} case {name}: {exc}") from exc
            cases.append(ContractCase(table, valid["name"], valid, source, base))
    return cases


def _under(base: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """``case`` with what it lacks of ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in case.items():
        below = merged.get(key)
        merged[key] = _under(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


# -- comparison -----------------------------------------------------------------


def differences(expected: Any, actual: Any, where: str = "") -> Iterator[str]:
    """One line per place ``actual`` differs from ``expected`` (``ANY`` matches anything)."""
    if isinstance(expected, str) and expected == ANY:
        return
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                yield f"{where}.{key}: missing (expected {_short(expected[key])})"
            else:
                yield from differences(expected[key], actual[key], f"{where}.{key}")
        for key in actual:
            if key not in expected:
                yield f"{where}.{key}: unexpected {_short(actual[key])}"
    elif isinstance(expected, list) and isinstance(actual, list):
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            yield from differences(want, got, f"{where}[{index}]")
        if len(expected) != len(actual):
            yield f"{where}: expected {len(expected)} items, got {len(actual)}"
    elif expected != actual or (type(expected) is not type(actual) and not _same_number(expected, actual)):
        yield f"{where or '$'}: expected {_short(expected)}, got {_short(actual)}"


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"


def mismatch(title: str, expected: Any, actual: Any, *, show: bool = True) -> str | None:
    """A readable report of how ``actual`` differs from ``expected`` (and, with
    ``show``, the whole of ``actual``), or None when it matches."""
    lines = list(differences(expected, actual))
    if not lines:
        return None
    shown = ["actual:", _indent(json.dumps(actual, indent=2, ensure_ascii=False, default=repr))] if show else []
    return "\n".join([title, *(f"  {line}" for line in lines[:40]), *shown])


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines()[:200])
