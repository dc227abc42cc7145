"""``wahub providers`` (the capability matrix of the installed providers) and
``wahub number register|pin`` against the fake Graph API over real HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import pytest
import yaml

from wahub import hookimpl
from wahub.core.canonical import capability_matrix
from wahub.core.canonical.fit import CLOUD_API, Capabilities
from wahub.core.models import Event, OutgoingMessage, SendResult
from wahub.core.provider import Provider, secret_matches
from wahub.testing.fake_graph import FakeGraphServer


class PostcardProvider(Provider):
    """A provider of this test: text and images only, 1600 characters of text."""

    PLATFORM = "postcard"
    CAPABILITIES = Capabilities(types=frozenset({"text", "image"}), max_text=1600)

    def verify_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        return secret_matches(headers.get("X-Postcard-Key", ""), "postcard-key")

    def parse_webhook(self, body: bytes) -> list[Event]:
        return []

    async def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(f"postcard.{message.to}")


@hookimpl
def register_providers() -> Iterable[type[Provider]]:
    return [PostcardProvider]


async def wahub(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahub",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    return process.returncode or 0, out.decode(), err.decode()


# -- the matrix -----------------------------------------------------------------


def test_every_kind_of_the_cloud_api_is_sent_and_extra_buttons_become_a_list() -> None:
    support = capability_matrix.kind_support(CLOUD_API)
    assert {kind: found.outcome for kind, found in support.items() if found.outcome != "sent"} == {
        capability_matrix.EXTRA_BUTTONS: "list"
    }
    assert support[capability_matrix.EXTRA_BUTTONS].note == "as a list of at most 10 rows"


def test_kinds_a_provider_lacks_fall_back_as_fit_documents() -> None:
    caps = Capabilities(types=frozenset({"text", "interactive", "interactive.button"}), max_buttons=2, max_list_rows=5)
    support = capability_matrix.kind_support(caps)
    outcomes = {kind: found.outcome for kind, found in support.items()}
    assert outcomes == {
        "text": "sent",
        **dict.fromkeys(("image", "video", "audio", "document", "sticker", "location", "contacts"), "text"),
        **dict.fromkeys(("reaction", "template", "mark_read", "interactive.flow"), "refused"),
        "interactive.button": "sent",
        "interactive.list": "text",
        "interactive.cta_url": "text",
        capability_matrix.EXTRA_BUTTONS: "refused",
    }
    assert support["image"].note == "sent by link, as its caption and link; by media id refused"
    assert support["template"].note == "template is not supported by this provider"
    assert "no lists to turn them into" in support[capability_matrix.EXTRA_BUTTONS].note


def test_without_text_nothing_falls_back() -> None:
    support = capability_matrix.kind_support(Capabilities(types=frozenset({"template"})))
    assert [kind for kind, found in support.items() if found.outcome != "refused"] == ["template"]
    assert support["location"].note == "location is not supported by this provider, nor text to fall back on"


def test_extra_buttons_beyond_the_list_rows_are_refused() -> None:
    support = capability_matrix.kind_support(Capabilities(max_buttons=3, max_list_rows=3))
    assert support[capability_matrix.EXTRA_BUTTONS] == capability_matrix.Support(
        "refused", "has 4 buttons; at most 3, or 3 as a list"
    )


def test_the_markdown_table_reads_back_and_differences_name_the_cell() -> None:
    providers = {"meta_cloud": CLOUD_API, "postcard": PostcardProvider.CAPABILITIES}
    document = "intro\n{}\nrest\n".format("\n\n".join(capability_matrix.MARKERS))
    table = capability_matrix.read_markdown(capability_matrix.replace_table(document, providers))
    assert capability_matrix.differences(table, providers) == []
    assert table["postcard"]["text"] == "yes" and table["postcard"]["text characters"] == "1600"
    table["postcard"]["location"] = "yes"
    del table["meta_cloud"]["reaction"]
    table["meta_cloud"]["carousel"] = "yes"
    assert capability_matrix.differences(table, providers) == [
        "postcard: location: the table says 'yes', CAPABILITIES give 'as text'",
        "meta_cloud: reaction: the table has no such row, CAPABILITIES give 'yes'",
        "carousel: the table has this row, CAPABILITIES have no such kind or limit",
    ]


def test_a_document_without_markers_is_not_rewritten() -> None:
    with pytest.raises(ValueError, match="no <!-- capabilities:end --> line"):
        capability_matrix.replace_table("<!-- capabilities:start -->\n", {"meta_cloud": CLOUD_API})
    with pytest.raises(ValueError, match="no <!-- capabilities:start --> line"):
        capability_matrix.replace_table("no table here\n", {"meta_cloud": CLOUD_API})


# -- wahub providers ------------------------------------------------------------


async def test_providers_prints_an_aligned_column_per_installed_provider() -> None:
    code, out, err = await wahub("providers", "-p", __name__)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    platforms = lines[0].split()
    # Other installed providers may add columns; these are always there, in order.
    assert platforms == sorted(platforms) and {"dialog360", "meta_cloud", "postcard", "sandbox"} <= set(platforms)
    columns = {name: lines[0].index(name) for name in platforms}
    rows = {line.split("  ")[0].strip(): line for line in lines[1 : lines.index("")]}

    def cell(row: str, platform: str) -> str:
        return rows[row][columns[platform] :].split("  ")[0]

    shown = [cell("image", p) for p in ("dialog360", "meta_cloud", "postcard", "sandbox")]
    assert shown == ["yes", "yes", "yes", "as text"]
    assert cell("text characters", "postcard") == "1600" and cell("text characters", "meta_cloud") == "4096"
    assert cell("extra buttons", "meta_cloud") == "as list" and cell("interactive.flow", "postcard") == "no"
    # Each cell starts under its platform's name.
    for line in rows.values():
        assert all(line[column - 2 : column] == "  " and line[column] != " " for column in columns.values()), line
    assert "postcard: interactive.button: text: as the text a person would read" in lines
    assert "sandbox: reaction: refused: reaction is not supported by this provider" in lines


async def test_providers_json_is_the_matrix_of_every_registered_class() -> None:
    code, out, err = await wahub("providers", "--json", "-p", __name__)
    assert (code, err) == (0, "")
    matrix = json.loads(out)
    assert {"dialog360", "meta_cloud", "postcard", "sandbox"} <= set(matrix["providers"])
    postcard = matrix["providers"]["postcard"]
    assert postcard["limits"]["max_text"] == 1600 and postcard["limits"]["max_buttons"] == 3
    assert postcard["kinds"]["template"] == {"outcome": "refused", "note": "template is not supported by this provider"}
    assert matrix["providers"]["meta_cloud"]["kinds"]["interactive.flow"] == {"outcome": "sent", "note": ""}
    assert matrix["outcomes"] == ["sent", "list", "text", "refused"]


async def test_providers_markdown_rewrites_only_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "choosing.md"
    doc.write_text("# Choosing\n\n<!-- capabilities:start -->\n| old |\n<!-- capabilities:end -->\n\nAfter.\n")
    code, out, err = await wahub("providers", "--markdown", str(doc))
    assert (code, out, err) == (0, f"{doc}: table rewritten\n", "")
    text = doc.read_text()
    assert text.startswith("# Choosing\n\n<!-- capabilities:start -->\n| kind or limit | ")
    assert text.endswith(" |\n<!-- capabilities:end -->\n\nAfter.\n") and "| old |" not in text
    table = capability_matrix.read_markdown(text)
    assert {"dialog360", "meta_cloud", "sandbox"} <= set(table) and "postcard" not in table
    assert table["sandbox"]["contacts per message"] == "5" and table["meta_cloud"]["interactive.flow"] == "yes"
    assert await wahub("providers", "--markdown", str(doc)) == (0, f"{doc}: table already up to date\n", "")
    code, printed, _ = await wahub("providers", "--markdown")
    assert code == 0 and printed in text

    (tmp_path / "plain.md").write_text("no markers\n")
    code, out, err = await wahub("providers", "--markdown", str(tmp_path / "plain.md"))
    assert (code, out) == (69, "")
    reason = "the document has no <!-- capabilities:start --> line"
    assert err == f"wahub: {tmp_path}/plain.md: cannot rewrite the capability table: {reason}\n"


# -- wahub number ---------------------------------------------------------------


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    server = await FakeGraphServer().start()
    server.number_registered = False
    try:
        yield server
    finally:
        await server.close()


def number_config(tmp_path: Path, graph: FakeGraphServer, sqlite_url: str) -> str:
    sandbox = {"platform": "sandbox", "name": "sandbox", "secret": "sandbox-secret-0123456789"}
    raw = {"wahub": {"database": sqlite_url}, "providers": [graph.provider_entry("main"), sandbox]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return str(tmp_path / "config.yaml")


async def test_number_register_then_pin(graph: FakeGraphServer, tmp_path: Path, sqlite_url: str) -> None:
    config = number_config(tmp_path, graph, sqlite_url)
    code, out, err = await wahub("number", "register", "-c", config, "--pin", "314159")
    assert (code, err) == (0, "")
    assert out == f'main: {{"phone_number_id": "{graph.phone_number_id}", "registered": true}}\n'
    assert (graph.number_registered, graph.two_step_pin) == (True, "314159")
    # Read from standard input when --pin is not given; never printed.
    code, out, err = await wahub("number", "pin", "-c", config, "--provider", "main", stdin=b"271828\n")
    assert (code, err) == (0, "") and "271828" not in out
    assert (graph.two_step_pin, graph.schema_errors) == ("271828", [])


async def test_number_errors_from_meta_show_their_code(graph: FakeGraphServer, tmp_path: Path, sqlite_url: str) -> None:
    config = number_config(tmp_path, graph, sqlite_url)
    graph.two_step_pin = "111111"
    code, out, err = await wahub("number", "register", "-c", config, "--pin", "999999")
    assert (code, out) == (1, "")
    assert err.startswith("main: the PIN does not match the number's two-step verification PIN")
    assert err.rstrip().endswith("(code 133005)") and "999999" not in err
    graph.fail_next(190, http_status=401, message="Error validating access token")
    code, out, err = await wahub("number", "register", "-c", config, "--pin", "111111")
    assert (code, out) == (1, "") and err.rstrip().endswith("(code 190)")


async def test_a_bad_pin_is_refused_without_a_request_and_not_repeated(
    graph: FakeGraphServer, tmp_path: Path, sqlite_url: str
) -> None:
    config = number_config(tmp_path, graph, sqlite_url)
    code, out, err = await wahub("number", "register", "-c", config, "--pin", "12a456")
    assert (code, out) == (2, "")
    assert "argument --pin: the two-step verification PIN must be exactly six digits (0-9)" in err
    assert "12a456" not in err
    code, out, err = await wahub("number", "pin", "-c", config, stdin=b"1234\n")
    assert (code, out, "1234" in err) == (69, "", False)
    assert err == "wahub: --pin: the two-step verification PIN must be exactly six digits (0-9)\n"
    assert graph.requests == []


async def test_number_needs_a_provider_that_registers_numbers(tmp_path: Path, sqlite_url: str) -> None:
    raw = {"wahub": {"database": sqlite_url}, "providers": [{"platform": "sandbox", "name": "sandbox"}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    code, out, err = await wahub("number", "register", "-c", str(tmp_path / "config.yaml"), "--pin", "123456")
    assert (code, out, err) == (69, "", "wahub: no provider here can do 'number register'\n")
