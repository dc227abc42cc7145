"""The contract suite's fixture format: loading, defaults, refusals and the comparison."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing.contract import ANY, ContractSuite, FixtureError, load_cases
from wahub.testing.contract_format import differences, mismatch

MESSAGE = {"to": "15551234567", "type": "text", "text": {"body": "hi"}}


def test_defaults_are_merged_into_each_case_of_their_table() -> None:
    cases = load_cases(
        {
            "defaults": {"errors": {"message": MESSAGE}, "inbound": {"headers": {"X-A": "1"}}},
            "inbound": [
                {"name": "a", "body": {}, "events": []},
                {"name": "b", "body": {}, "headers": {}, "events": []},
            ],
            "errors": [{"name": "c", "meaning": {"kind": "auth", "code": 190}}],
        }
    )
    assert [case.id for case in cases] == ["inbound/a", "inbound/b", "errors/c"]
    assert [case.data["headers"] for case in cases[:2]] == [{"X-A": "1"}, {}]
    assert cases[0].data["verified"] is True
    assert cases[2].data["meaning"] == {"kind": "auth", "code": "190", "lesson": None, "says": []}
    assert cases[2].data["meaning"] == {"kind": "auth", "code": "190", "lesson": None, "says": []}


def test_a_directory_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("outbound:\n  - {name: two, message: {to: '1', type: text, text: {body: x}}}\n")
    (tmp_path / "a.json").write_text('{"inbound": [{"name": "one", "body_text": "{}", "events": []}]}')
    (tmp_path / "notes.txt").write_text("not a fixture")
    assert [case.id for case in load_cases(tmp_path)] == ["inbound/one", "outbound/two"]


@pytest.mark.parametrize(
    ("tables", "problem"),
    [
        ({"inbound": [{"name": "x", "events": []}]}, "give the webhook as body, body_file, body_text or body_form"),
        ({"inbound": [{"name": "x", "body": {}, "events": [], "error": "y"}]}, "inbound case x"),
        ({"outbound": [{"name": "x"}]}, "required key not provided @ data['message']"),
        ({"errors": [{"name": "x", "message": MESSAGE, "meaning": {"kind": "fatal"}}]}, "errors case x"),
        ({"outbound": [{"name": "has space", "message": MESSAGE}]}, "no spaces"),
        ({"outbond": []}, "unknown top-level keys ['outbond']"),
        ({"inbound": {"name": "x"}}, "inbound must be a list"),
    ],
)
def test_a_case_out_of_the_format_is_refused_naming_it(tables: dict[str, object], problem: str) -> None:
    with pytest.raises(FixtureError, match=re.escape(problem)):
        load_cases(tables)


def test_suite_defaults_lie_under_each_case_key_by_key() -> None:
    request = {"json": {"a": 1}, "headers": {"X-B": "2"}}
    tables = {
        "defaults": {"outbound": {"answer": {"status": 201, "json": {}}}},
        "outbound": [
            {"name": "shared", "message": MESSAGE, "request": request},
            {"name": "own-path", "message": MESSAGE, "request": {**request, "path": "/own"}},
        ],
    }
    suite = ContractSuite(
        SandboxProvider,
        tables,
        {"platform": "sandbox", "name": "sandbox"},
        defaults={"outbound": {"request": {"method": "POST", "path": "/messages"}, "answer": {"status": 200}}},
    )
    shared, own = suite.cases()
    assert shared.data["request"] == {"method": "POST", "path": "/messages", **request}
    assert own.data["request"]["path"] == "/own"  # a case's own value wins
    assert shared.data["answer"] == {"status": 201, "json": {}}  # and so does its file's default


def test_two_cases_of_one_name_are_refused() -> None:
    tables = {"outbound": [{"name": "x", "message": MESSAGE}], "errors": []}
    suite = ContractSuite(SandboxProvider, [tables, tables], {"platform": "sandbox", "name": "sandbox"})
    with pytest.raises(FixtureError, match="two cases are called 'outbound/x'"):
        suite.cases()


def test_a_missing_or_broken_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match=re.escape("no .yaml, .yml or .json fixture files")):
        load_cases(tmp_path)
    (tmp_path / "bad.yaml").write_text("inbound: [unclosed")
    with pytest.raises(FixtureError, match=re.escape("bad.yaml: not YAML")):
        load_cases(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(FixtureError, match="expected a mapping"):
        load_cases(tmp_path / "list.yaml")


def test_differences_name_each_place_by_its_path() -> None:
    expected = {"a": 1, "b": [1, 2], "c": {"d": "x"}, "e": ANY, "f": True}
    actual = {"a": 1.0, "b": [1], "c": {"d": "y", "z": 0}, "e": {"anything": []}, "f": 1, "g": None}
    assert list(differences(expected, actual)) == [
        ".b: expected 2 items, got 1",
        '.c.d: expected "x", got "y"',
        ".c.z: unexpected 0",
        ".f: expected true, got 1",
        ".g: unexpected null",
    ]
    assert list(differences({"a": 1}, {})) == [".a: missing (expected 1)"]
    assert mismatch("title", [1], [1]) is None
    report = mismatch("title", {"a": 1}, {"a": 2})
    assert report is not None and report.splitlines()[:3] == ["title", "  .a: expected 1, got 2", "actual:"]
