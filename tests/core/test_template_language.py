"""The language a template is sent in when the message names none: the
contact's, its base language, another variant of it, then ``wahub.language``,
among the languages the template is approved in; end to end through the REST
API and a fake provider, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from wahub.core.policy.template_language import choose_language
from wahub.core.storage.policy import Template

from .test_engine import USER, Engine, engine_for

PT_BR, PT_PT, NEW = "15557654321", "15557650002", "15557650003"


@pytest.mark.parametrize(
    ("approved", "contact", "default", "chosen"),
    [
        (["en_US", "pt_BR", "pt_PT"], "pt-BR", "en", "pt_BR"),
        (["en_US", "pt_BR", "pt_PT"], "pt_PT", "en", "pt_PT"),
        (["en_US", "pt_BR"], "pt-PT", "en", "pt_BR"),
        (["en_US", "pt"], "pt-BR", "en", "pt"),
        # Several other variants: always the first in alphabetical order.
        (["pt_PT", "pt_AO", "en"], "pt-BR", "en", "pt_AO"),
        (["zh_CN", "zh-Hant"], "zh-Hant-TW", "en", "zh-Hant"),
        (["en_US", "de"], "fr", "en", "en_US"),
        (["en_GB", "en_US"], None, "en-US", "en_US"),
        (["en_US", "de"], "not a language", "de", "de"),
        (["fr"], "pt-BR", "en", None),
        ([], None, "en", None),
    ],
)
def test_the_language_chosen(approved: list[str], contact: str | None, default: str, chosen: str | None) -> None:
    assert choose_language(approved, contact, default)[0] == chosen


def test_what_was_tried_is_said_in_order() -> None:
    assert choose_language(["fr"], "pt-PT", "en-GB") == (None, ["pt-PT", "pt", "any pt", "en-GB", "en", "any en"])
    assert choose_language([], "en", "en") == (None, ["en", "any en"])


def _template(*, language: str | None = None, to: str = USER) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "order_update"}
    if language is not None:
        body["language"] = {"code": language}
    return {"to": to, "type": "template", "template": body}


async def _speaks(engine: Engine, sender: str, language: str) -> None:
    """The contact ``sender`` has written once and has ``language`` set."""
    await engine.inbound("hello", sender=sender)
    hub = engine.daemon.hub
    contact = await hub.storage.policy.contact("fake", sender)
    assert contact.contact_id is not None
    await hub.storage.contacts.update(contact.contact_id, {"language": language})


async def _sent_language(engine: Engine, body: dict[str, Any]) -> str:
    """The language a template went out in, as queued and as the provider received it."""
    status, answer = await engine.send(body)
    assert status == 202, answer
    delivered = await engine.status_becomes(answer["id"], "delivered")
    call = [c for c in engine.server.accepted() if c.body["to"] == body["to"]][-1]
    assert call.body["template"]["language"] == delivered["message"]["template"]["language"]
    code: str = delivered["message"]["template"]["language"]["code"]
    return code


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    """A daemon whose ``order_update`` is approved in pt_BR and en_US, paused in pt_PT."""
    async for running in engine_for(database_url, pair_limit=None):
        policy = running.daemon.hub.storage.policy
        for language, status in (("pt_BR", "APPROVED"), ("pt_PT", "PAUSED"), ("en_US", "APPROVED")):
            await policy.upsert_template("fake", Template("order_update", language, "UTILITY", status))
        await _speaks(running, PT_BR, "pt-BR")
        await _speaks(running, PT_PT, "pt-PT")
        yield running


async def test_each_contact_gets_the_approved_language_that_suits_it(engine: Engine) -> None:
    assert await _sent_language(engine, _template(to=PT_BR)) == "pt_BR"
    # pt_PT is paused: a pt-PT contact gets the other Portuguese.
    assert await _sent_language(engine, _template(to=PT_PT)) == "pt_BR"
    # A contact wahub does not know yet: wahub.language (en), as en_US.
    assert await _sent_language(engine, _template(to=NEW)) == "en_US"


async def test_an_explicit_language_is_kept_as_before(engine: Engine) -> None:
    assert await _sent_language(engine, _template(to=PT_BR, language="en_US")) == "en_US"
    status, answer = await engine.send(_template(to=PT_PT, language="pt_PT"))
    assert (status, answer["error"]["code"]) == (422, "template_not_approved")
    assert answer["error"]["message"] == "template 'order_update' (pt_PT) is PAUSED, not APPROVED"


async def test_no_approved_language_is_refused_naming_what_was_tried(engine: Engine) -> None:
    policy = engine.daemon.hub.storage.policy
    for language in ("pt_BR", "en_US"):
        await policy.update_template("fake", "order_update", language, status="PAUSED")
    await policy.upsert_template("fake", Template("order_update", "de", "UTILITY", "APPROVED"))
    calls = len(engine.server.calls)

    status, answer = await engine.send(_template(to=PT_PT))

    assert (status, answer["error"]["code"]) == (422, "template_not_approved")
    assert answer["error"]["message"] == (
        f"template 'order_update' has no approved language for {PT_PT}: tried pt-PT, pt, any pt, en, any en; "
        "it is approved in de; or name one in template.language.code"
    )
    assert len(engine.server.calls) == calls


async def test_a_template_stored_in_no_language_is_refused(engine: Engine) -> None:
    status, answer = await engine.send({**_template(to=PT_BR), "template": {"name": "unknown_one"}})
    assert (status, answer["error"]["code"]) == (422, "template_not_approved")
    message = answer["error"]["message"]
    assert "provider 'fake' has no template 'unknown_one' stored in any language" in message
    assert "tried pt-BR, pt, any pt, en, any en" in message
