"""The pytest plugin of the provider contract suite (``wahub.testing.contract``),
registered through the ``pytest11`` entry point ``wahub_contract``.

It registers the ``provider_contract`` marker and gives every test carrying it
(``contract_tests`` makes one) one parametrized case per row of the suite's
fixture tables, with ids like ``test_meta[outbound/text-with-preview]``. A
fixture file that is not in the contract format fails the collection with the
file, the case and the problem.
"""

from __future__ import annotations

import pytest

from wahub.testing.contract_format import MARKER, ContractSuite, FixtureError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(suite): one test per case of a provider contract suite (wahub.testing.contract)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    suite = marker.args[0] if marker.args else ContractSuite(**marker.kwargs)
    if not isinstance(suite, ContractSuite) or "contract_case" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: {MARKER} takes a ContractSuite and a test with a contract_case argument; "
            "use wahub.testing.contract.contract_tests"
        )
    try:
        cases = suite.cases()
    except FixtureError as exc:
        pytest.fail(f"contract fixtures of {suite.provider.__name__}: {exc}", pytrace=False)
    metafunc.parametrize("contract_case", cases, ids=[case.id for case in cases])
