"""The provider contract suite: a provider plugin proves, with data files, that it
parses webhooks, sends messages and reads error answers as wahub expects.

A suite is a ``ContractSuite`` (the provider class, its ``providers:`` entry, the
config key holding its API's base URL) plus fixture files: YAML (or JSON) files
with up to three tables, ``inbound``, ``outbound`` and ``errors``, and a
``defaults`` mapping merged into every case of the file. A test file is::

    from wahub.testing.contract import contract_tests

    test_acme = contract_tests(
        AcmeProvider,
        fixtures=Path(__file__).parent / "contract",
        config={"platform": "acme", "name": "main", "api_key": "k", "secret": "s" * 16},
        base_url_key="api_base",
    )

The pytest plugin (``wahub.testing.pytest_plugin``, registered through the
``pytest11`` entry point) turns the test into one case per table row. The file
format is described in docs/writing-plugins.md ("Testing your provider with the
contract suite"); ``wahub.testing.contract_run`` runs the cases.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wahub.testing.contract_format import (
    ANY,
    MARKER,
    Capture,
    ContractCase,
    ContractSuite,
    FixtureError,
    Recorded,
    RequestCheck,
    Signer,
    load_cases,
)
from wahub.testing.contract_run import run_case

if TYPE_CHECKING:
    from wahub.core.provider import Provider

__all__ = [
    "ANY",
    "MARKER",
    "Capture",
    "ContractCase",
    "ContractSuite",
    "FixtureError",
    "Recorded",
    "RequestCheck",
    "Signer",
    "contract_tests",
    "load_cases",
]


def contract_tests(
    provider: type[Provider],
    *,
    fixtures: Path | str | Mapping[str, Any] | list[Path | Mapping[str, Any]],
    config: Mapping[str, Any],
    base_url_key: str | None = None,
    capture: Capture | None = None,
    check_request: RequestCheck | None = None,
    setup: Callable[[Provider], Awaitable[None]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    signer: Signer | None = None,
) -> Callable[..., None]:
    """A test function the pytest plugin runs once per contract case; assign it to
    a ``test_...`` name in a test module."""
    suite = ContractSuite(
        provider,
        Path(fixtures) if isinstance(fixtures, str) else fixtures,
        config,
        base_url_key,
        capture,
        check_request,
        setup,
        defaults or {},
        signer,
    )

    def test_provider_contract(contract_case: ContractCase, tmp_path: Path) -> None:
        __tracebackhide__ = True
        run_case(suite, contract_case, tmp_path)

    import pytest

    marked: Callable[..., None] = getattr(pytest.mark, MARKER)(suite)(test_provider_contract)
    return marked
