"""The sandbox as a template account (``wahub templates plan|apply`` against it,
on SQLite and PostgreSQL), and a template send as its user reads it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from wahub.core.config.templates import load_templates
from wahub.core.errors import ProviderError
from wahub.core.hub import Hub
from wahub.core.metrics import Metrics
from wahub.core.models import OutgoingMessage
from wahub.core.policy.template_plan import Action, TemplateAccount, apply, plan
from wahub.core.storage.store import Storage
from wahub.plugins.providers.sandbox.frames import frame_message
from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.plugins.providers.sandbox.render import render
from wahub.testing import TEST_SECRET, plugin_manager

REPOSITORY = Path(__file__).parents[3]
ORDER_UPDATE = yaml.safe_load((REPOSITORY / "templates" / "order_update.yaml").read_text())
REMINDER = yaml.safe_load((REPOSITORY / "templates" / "appointment_reminder.yaml").read_text())


def sandbox(storage: Storage, templates: list[dict[str, Any]] | None = None) -> SandboxProvider:
    """A sandbox provider on ``storage``, with the ``templates:`` option given."""
    entry = {"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "templates": templates or []}
    config = SandboxProvider.CONFIG_SCHEMA(entry)
    hub = Hub(config={"providers": [config]}, pm=plugin_manager(), metrics=Metrics())
    hub.storage = storage
    return SandboxProvider(hub, config)


def directory(tmp_path: Path) -> Path:
    """A copy of the repository's example templates directory."""
    return Path(shutil.copytree(REPOSITORY / "templates", tmp_path / "templates"))


def actions(steps: list[Any]) -> list[tuple[str, str, str]]:
    return [(str(step.action), step.name, step.language) for step in steps]


async def test_apply_creates_the_example_templates_and_the_plan_is_then_empty(storage: Storage, tmp_path: Path) -> None:
    provider = sandbox(storage)
    assert isinstance(provider, TemplateAccount)
    templates_dir = directory(tmp_path)
    definitions = load_templates(templates_dir)
    steps = await plan(provider, definitions)
    assert actions(steps) == [
        ("create", "appointment_reminder", "en"),
        ("create", "order_update", "en"),
        ("create", "order_update", "pt_BR"),
    ]
    outcomes = await apply(provider, steps, files_from=templates_dir)
    assert [(o.detail, o.error) for o in outcomes] == [
        ("created, APPROVED (id sbx.appointment_reminder.en)", None),
        ("created, APPROVED (id sbx.order_update.en)", None),
        ("created, APPROVED (id sbx.order_update.pt_BR)", None),
    ]
    # A provider started anew on the same database sees what was created.
    again = await plan(sandbox(storage), definitions)
    assert {step.action for step in again} == {Action.SAME}
    stored = {(row["name"], row["language"]): row for row in await storage.policy.templates("sandbox")}
    assert stored["order_update", "en"]["status"] == "APPROVED"
    assert stored["order_update", "en"]["components"] == ORDER_UPDATE["languages"]["en"]["components"]


async def test_an_edited_file_is_edited_and_a_removed_one_pruned(storage: Storage, tmp_path: Path) -> None:
    provider = sandbox(storage)
    templates_dir = directory(tmp_path)
    await apply(provider, await plan(provider, load_templates(templates_dir)), files_from=templates_dir)

    changed = yaml.safe_load((templates_dir / "appointment_reminder.yaml").read_text())
    changed["category"] = "MARKETING"
    changed["languages"]["en"]["components"][0]["text"] = "Hi {{1}}, see you on {{2}}."
    (templates_dir / "appointment_reminder.yaml").write_text(yaml.safe_dump(changed))
    (templates_dir / "order_update.yaml").unlink()
    steps = await plan(provider, load_templates(templates_dir), prune=True)
    assert actions(steps) == [
        ("edit", "appointment_reminder", "en"),
        ("delete", "order_update", "en"),
        ("delete", "order_update", "pt_BR"),
    ]
    assert steps[0].reasons == ("components", "category UTILITY -> MARKETING")
    outcomes = await apply(provider, steps, files_from=templates_dir)
    assert [o.error for o in outcomes] == [None, None, None]

    assert {step.action for step in await plan(provider, load_templates(templates_dir), prune=True)} == {Action.SAME}
    [row] = await storage.policy.templates("sandbox")
    assert (row["name"], row["category"], row["status"]) == ("appointment_reminder", "MARKETING", "APPROVED")
    assert row["components"][0]["text"] == "Hi {{1}}, see you on {{2}}."


async def test_configured_templates_are_listed_with_their_body_and_kept_without_prune(storage: Storage) -> None:
    provider = sandbox(storage, [{"name": "order_ready", "text": "Order {{1}} is ready"}])
    await provider.start()
    try:
        [listed] = [item async for item in provider.list_templates()]
        assert listed == {
            "id": "sbx.order_ready.en",
            "name": "order_ready",
            "language": "en",
            "category": "UTILITY",
            "status": "APPROVED",
            "parameter_format": "POSITIONAL",
            "components": [{"type": "BODY", "text": "Order {{1}} is ready"}],
        }
        assert actions(await plan(provider, [])) == [("keep", "order_ready", "en")]
    finally:
        await provider.stop()


async def test_bad_creates_and_unknown_ids_are_refused_by_name(storage: Storage, tmp_path: Path) -> None:
    provider = sandbox(storage)
    with pytest.raises(ProviderError, match="'category' must be one of MARKETING, UTILITY, AUTHENTICATION"):
        await provider.create_template({"name": "promo", "language": "en", "components": [{"type": "BODY"}]})
    with pytest.raises(ProviderError, match="needs 'language'"):
        await provider.create_template({"name": "promo", "category": "UTILITY", "components": [{"type": "BODY"}]})
    body = {"name": "promo", "language": "en", "category": "MARKETING", "components": [{"type": "BODY", "text": "x"}]}
    await provider.create_template(body)
    with pytest.raises(ProviderError, match="'promo' already exists in en"):
        await provider.create_template(body)
    with pytest.raises(ProviderError, match=r"no template with id 'sbx\.promo\.de'"):
        await provider.edit_template("sbx.promo.de", {"category": "UTILITY"})
    with pytest.raises(ProviderError, match="no template named 'other'"):
        await provider.delete_template("other")
    with pytest.raises(ProviderError, match=r"cannot read .*banner\.png for a handle"):
        await provider.upload_handle(tmp_path / "banner.png")
    (tmp_path / "banner.png").write_bytes(b"\x89PNG")
    assert (await provider.upload_handle(tmp_path / "banner.png")).startswith("sbx.file.")


def test_a_named_template_reads_with_its_header_body_footer_and_url_button() -> None:
    sent = {
        "name": "order_update",
        "language": {"code": "en"},
        "components": [
            {"type": "header", "parameters": [{"type": "text", "text": "42"}]},
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "parameter_name": "name", "text": "Ana"},
                    {"type": "text", "parameter_name": "order_id", "text": "42"},
                ],
            },
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "42"}]},
        ],
    }
    shown = render("order_update", ORDER_UPDATE["languages"]["en"]["components"], sent)
    assert shown.text == (
        "*Order 42*\n\nHi Ana, your order 42 has shipped.\n\n_Reply STOP to stop these messages_\n\n"
        "Track the order: https://shop.example.com/orders/42"
    )
    assert shown.buttons == []
    assert shown.body() == {"type": "text", "text": {"body": shown.text}}


def test_a_positional_template_fills_in_order_and_shows_quick_replies_as_buttons() -> None:
    sent = {
        "name": "appointment_reminder",
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "Tuesday"}]},
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": "1",
                "parameters": [{"type": "payload", "payload": "later"}],
            },
        ],
    }
    shown = render("appointment_reminder", REMINDER["languages"]["en"]["components"], sent)
    assert shown.text == "Hello Ana, this is a reminder of your appointment on Tuesday."
    assert shown.buttons == [{"id": "Confirm", "title": "Confirm"}, {"id": "later", "title": "Reschedule"}]
    assert shown.body()["interactive"]["action"]["buttons"][1] == {"type": "reply", "reply": shown.buttons[1]}


def test_a_missing_parameter_fails_the_send_naming_the_placeholder() -> None:
    sent = {"name": "order_update", "components": [{"type": "header", "parameters": [{"type": "text", "text": "42"}]}]}
    with pytest.raises(ProviderError, match=r"no value for \{\{name\}\} in the body") as refused:
        render("order_update", ORDER_UPDATE["languages"]["en"]["components"], sent)
    assert refused.value.code == "132000"


async def test_a_send_missing_a_parameter_fails_and_shows_by_name_in_the_history(storage: Storage) -> None:
    provider = sandbox(storage)
    components = ORDER_UPDATE["languages"]["en"]["components"]
    await provider.create_template(
        {"name": "order_update", "language": "en", "category": "UTILITY", "components": components}
    )
    sent = {"name": "order_update", "language": {"code": "en"}, "components": []}
    with pytest.raises(ProviderError, match=r"no value for \{\{order_id\}\} in the header") as refused:
        await provider.send(OutgoingMessage(to="15551234567", type="template", content={"template": sent}))
    assert refused.value.code == "132000"
    body = {"to": "15551234567", "type": "template", "template": sent}
    assert await provider.shown_body(body) == body
    assert frame_message({"body": body, "direction": "out", "status": "failed", "created_at": 0})["text"] == (
        "[template order_update]"
    )
