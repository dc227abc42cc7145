"""``wahub check-config`` and ``wahub templates plan|apply`` against the fake Graph API over real HTTP."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wahub.testing.fake_graph import FakeGraphServer

REPOSITORY = Path(__file__).parents[1]


async def wahub(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wahub", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    server = await FakeGraphServer().start()
    try:
        yield server
    finally:
        await server.close()


def write_config(tmp_path: Path, server: FakeGraphServer, database: str) -> Path:
    """A configuration whose provider ``main`` talks to ``server``, with the example templates beside it."""
    shutil.copytree(REPOSITORY / "templates", tmp_path / "templates")
    config = tmp_path / "config.yaml"
    raw = {"wahub": {"database": database}, "providers": [server.provider_entry("main", pair_limit=None)]}
    config.write_text(yaml.safe_dump(raw))
    return config


def listed(server: FakeGraphServer, name: str, language: str) -> dict[str, Any]:
    [found] = [t for t in server.templates if (t["name"], t["language"]) == (name, language)]
    return found


async def test_check_config_refuses_a_broken_template_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("wahub:\n  log_level: info\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "notice.yaml").write_text("name: notice\ncategory: UTILITY\nlanguages: {}\n")
    code, out, err = await wahub("check-config", "-c", str(tmp_path / "config.yaml"))
    assert (code, out) == (78, "")
    expected = "languages: expected at least one language, such as en: {components: [...]}"
    assert err.strip() == f"{tmp_path}/templates/notice.yaml:3: {expected}"

    code, out, err = await wahub("run", "-c", str(tmp_path / "config.yaml"))
    assert (code, out, err.strip()) == (78, "", f"{tmp_path}/templates/notice.yaml:3: {expected}")


async def test_the_example_configuration_runs_with_the_example_templates() -> None:
    code, out, err = await wahub("check-config", "-c", str(REPOSITORY / "config.example.yaml"))
    assert code == 0, err
    assert out.strip().endswith("configuration is valid")


async def test_plan_shows_one_create_and_one_edit_and_apply_empties_it(
    graph: FakeGraphServer, tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, graph, database_url)
    # The account has appointment_reminder as the directory has it, and order_update (en) with an older body.
    reminder = yaml.safe_load((tmp_path / "templates" / "appointment_reminder.yaml").read_text())
    graph.add_template(
        {"name": "appointment_reminder", "language": "en", "category": "UTILITY", "parameter_format": "POSITIONAL"}
        | {"components": reminder["languages"]["en"]["components"]}
    )
    order = yaml.safe_load((tmp_path / "templates" / "order_update.yaml").read_text())
    old = [dict(component) for component in order["languages"]["en"]["components"]]
    old[1] = {**old[1], "text": "Hi {{name}}, order {{order_id}} is on its way."}
    graph.add_template(
        {"name": "order_update", "language": "en", "category": "utility", "parameter_format": "NAMED"}
        | {"components": [{**component, "type": component["type"].lower()} for component in old]}
    )
    graph.add_template({"name": "legacy_offer", "language": "en", "category": "MARKETING", "components": []})

    code, out, err = await wahub("templates", "plan", "-c", str(config))
    assert code == 2, err
    assert out.splitlines() == [
        "main:   unchanged appointment_reminder (en)",
        "main: ~ edit order_update (en): components differ",
        "main: + create order_update (pt_BR)",
        "main:   kept legacy_offer (en) (not in the directory; --prune deletes it)",
        "main: plan: 1 to create, 1 to edit, 0 to delete",
    ]

    order_id = listed(graph, "order_update", "en")["id"]
    code, out, err = await wahub("templates", "apply", "-c", str(config))
    assert code == 0, err
    created = listed(graph, "order_update", "pt_BR")
    assert out.splitlines() == [
        "main: edit order_update (en): edited, back in review",
        f"main: create order_update (pt_BR): created, PENDING (id {created['id']})",
        "main: applied 2 of 2 change(s)",
    ]
    edited = listed(graph, "order_update", "en")
    assert edited["id"] == order_id and edited["status"] == "PENDING"
    assert edited["components"][1]["text"] == "Hi {{name}}, your order {{order_id}} has shipped."
    assert created["parameter_format"] == "NAMED" and created["components"][1]["text"].startswith("Olá {{name}}")

    code, out, err = await wahub("templates", "plan", "-c", str(config))
    assert code == 0, err
    assert out.splitlines()[-1] == "main: plan: 0 to create, 0 to edit, 0 to delete"


async def test_prune_deletes_what_the_directory_does_not_have(graph: FakeGraphServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, graph, f"sqlite:///{tmp_path}/wahub.db")
    graph.approve_templates = True
    for language in ("en", "es"):
        body = [{"type": "BODY", "text": "Sale!"}]
        graph.add_template({"name": "legacy_offer", "language": language, "category": "MARKETING", "components": body})
    code, out, err = await wahub("templates", "apply", "--prune", "-c", str(config))
    assert code == 0, err
    assert out.splitlines()[-3:] == [
        "main: delete legacy_offer (en): deleted (every language)",
        "main: delete legacy_offer (es): deleted with its other languages",
        "main: applied 5 of 5 change(s)",
    ]
    assert sorted((t["name"], t["language"], t["status"]) for t in graph.templates) == [
        ("appointment_reminder", "en", "APPROVED"),
        ("order_update", "en", "APPROVED"),
        ("order_update", "pt_BR", "APPROVED"),
    ]
    deletes = [r for r in graph.requests if r.method == "DELETE"]
    assert [r.query for r in deletes] == [{"name": "legacy_offer"}]

    code, out, err = await wahub("templates", "plan", "--prune", "-c", str(config))
    assert (code, out.splitlines()[-1]) == (0, "main: plan: 0 to create, 0 to edit, 0 to delete")


async def test_a_failing_create_is_reported_and_the_rest_still_applied(graph: FakeGraphServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, graph, f"sqlite:///{tmp_path}/wahub.db")
    # Valid here, but the API refuses it: the handle was not made by its Resumable Upload API.
    (tmp_path / "templates" / "banner.yaml").write_text(
        "name: banner\ncategory: MARKETING\nlanguages:\n  en:\n    components:\n"
        "      - {type: HEADER, format: IMAGE, example: {header_handle: [made-up]}}\n"
        "      - {type: BODY, text: New in store}\n"
    )
    code, out, err = await wahub("templates", "apply", "-c", str(config))
    assert code == 1
    assert err.splitlines() == [
        "main: create banner (en) failed: a parameter is invalid or misspelled ((#100) Invalid parameter; "
        "$.components[0].example.header_handle: not a handle from the Resumable Upload API) (code 100)"
    ]
    assert sorted((t["name"], t["language"]) for t in graph.templates) == [
        ("appointment_reminder", "en"),
        ("order_update", "en"),
        ("order_update", "pt_BR"),
    ]
    assert out.splitlines()[-1] == "main: applied 3 of 4 change(s), 1 failed"

    code, out, _ = await wahub("templates", "plan", "-c", str(config))
    assert code == 2
    assert "main: + create banner (en)" in out.splitlines()
    assert out.splitlines()[-1] == "main: plan: 1 to create, 0 to edit, 0 to delete"


async def test_a_media_header_file_is_uploaded_for_its_create_and_its_edit(
    graph: FakeGraphServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, graph, f"sqlite:///{tmp_path}/wahub.db")
    (tmp_path / "templates" / "banner.jpg").write_bytes(b"\xff\xd8\xff\xe0 banner")
    banner = tmp_path / "templates" / "banner.yaml"
    text = (
        "name: banner\ncategory: MARKETING\nlanguages:\n  en:\n    components:\n"
        "      - {type: HEADER, format: IMAGE, example: {header_file: banner.jpg}}\n"
        "      - {type: BODY, text: New in store}\n"
    )
    banner.write_text(text)
    code, _, err = await wahub("templates", "apply", "-c", str(config))
    assert code == 0, err
    [first] = listed(graph, "banner", "en")["components"][0]["example"]["header_handle"]
    assert graph.handles[first].data == b"\xff\xd8\xff\xe0 banner"

    banner.write_text(text.replace("New in store", "Newer in store"))
    code, out, err = await wahub("templates", "plan", "-c", str(config))
    assert code == 2 and "main: ~ edit banner (en): components differ" in out.splitlines()
    code, out, err = await wahub("templates", "apply", "-c", str(config))
    assert code == 0, err
    edited = listed(graph, "banner", "en")["components"]
    [second] = edited[0]["example"]["header_handle"]
    assert second != first and graph.handles[second].data == graph.handles[first].data
    assert edited[1]["text"] == "Newer in store"
    code, _, err = await wahub("templates", "plan", "-c", str(config))
    assert code == 0, err


async def test_dialog360_creates_and_deletes_but_has_no_edit(tmp_path: Path) -> None:
    graph = await FakeGraphServer(platform="dialog360").start()
    try:
        config = write_config(tmp_path, graph, f"sqlite:///{tmp_path}/wahub.db")
        code, _, err = await wahub("templates", "apply", "--provider", "main", "-c", str(config))
        assert code == 0, err
        assert sorted((t["name"], t["language"]) for t in graph.templates) == [
            ("appointment_reminder", "en"),
            ("order_update", "en"),
            ("order_update", "pt_BR"),
        ]
        reminder = tmp_path / "templates" / "appointment_reminder.yaml"
        reminder.write_text(reminder.read_text().replace("text: Reschedule", "text: Move it"))
        code, out, err = await wahub("templates", "apply", "-c", str(config))
        assert (code, out.splitlines()[-1]) == (1, "main: applied 0 of 1 change(s), 1 failed")
        assert err.splitlines() == [
            "main: edit appointment_reminder (en) failed: 360dialog's API has no template edit: delete the "
            "template and create it again (code unsupported)"
        ]
    finally:
        await graph.close()


async def test_plan_needs_a_provider_that_manages_templates(tmp_path: Path) -> None:
    # The test kit's fake provider sends messages but keeps no templates.
    fake = {"platform": "fake", "name": "fake", "api_base": "http://127.0.0.1:9", "access_token": "t"}
    raw = {"wahub": {"database": f"sqlite:///{tmp_path}/wahub.db"}, "providers": [fake | {"secret": "s" * 16}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    options = ("-p", "wahub.testing.fake_provider", "-c", str(tmp_path / "config.yaml"))
    code, _, err = await wahub("templates", "plan", *options)
    assert code == 69
    assert "no provider here manages templates (fake)" in err
    code, _, err = await wahub("templates", "plan", "--provider", "nope", *options)
    assert (code, err.strip()) == (69, f"wahub: no provider named 'nope' in {tmp_path}/config.yaml")
