"""A provider's own classification of its error codes drives what the engine
learns: the same code means an opt-out from one provider and nothing special
from another. End to end over real HTTP, with the fake provider and a
provider that speaks other codes (as Twilio's 21610 "unsubscribed recipient")."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import pytest

from wahub import hookimpl
from wahub.core.errors import ErrorKind, ErrorMeaning, Lesson
from wahub.core.provider import Provider
from wahub.testing import wait_until
from wahub.testing.fake_provider import FakeProvider

from .test_engine import AUTH, USER, Engine, _approved, engine_for, template

#: The other provider's codes and their meanings.
OTHER_CODES = {
    "21610": ErrorMeaning(ErrorKind.POLICY, "the recipient unsubscribed", Lesson.OPTED_OUT),
    "63032": ErrorMeaning(ErrorKind.POLICY, "the template is paused", Lesson.TEMPLATE_PAUSED),
}


class OtherCodesProvider(FakeProvider):
    """The fake provider, but its codes are not the Cloud API's."""

    PLATFORM = "other_codes"

    def classify_error(self, code: str | None, *, http_status: int | None = None) -> ErrorMeaning:
        return OTHER_CODES.get(code or "") or Provider.classify_error(self, code, http_status=http_status)


class OtherCodesPlugin:
    @hookimpl
    def register_providers(self) -> Iterable[type[Provider]]:
        return [OtherCodesProvider]


async def _opt_outs(engine: Engine) -> list[dict[str, Any]]:
    ledger = await engine.daemon.hub.storage.policy.ledger("fake", USER)
    return [entry for entry in ledger if entry["source"] == "provider_error"]


async def _template_status(engine: Engine, name: str) -> str | None:
    found, _ = await engine.daemon.hub.storage.policy.template("fake", name, "en")
    return None if found is None else found.status


@pytest.mark.parametrize(
    ("platform", "code", "learns"),
    [("fake", 131050, True), ("fake", 21610, False), ("other_codes", 21610, True), ("other_codes", 131050, False)],
)
async def test_an_opt_out_is_learnt_only_from_the_providers_own_code(
    database_url: str, platform: str, code: int, learns: bool
) -> None:
    async for engine in engine_for(database_url, plugins=(OtherCodesPlugin(),), platform=platform):
        await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("spring_sale", "MARKETING"))
        consent = {"action": "opt_in", "scope": "marketing", "evidence": {"form": "signup"}}
        url = f"{engine.daemon.url}/api/v1/contacts/fake/{USER}/consent"
        async with engine.http.post(url, json=consent, headers=AUTH) as response:
            assert response.status == 200
        engine.server.fail_next(1, code=code)
        _, body = await engine.send(template("spring_sale"))
        failed = await engine.status_becomes(body["id"], "failed")
        assert failed["error"]["code"] == str(code)

        opt_outs = await _opt_outs(engine)
        if learns:
            assert [(e["action"], e["scope"], e["evidence"]["error_code"]) for e in opt_outs] == [
                ("opt_out", "marketing", str(code))
            ]
            status, refused = await engine.send(template("spring_sale"))
            assert status == 422 and refused["error"]["code"] == "opt_in_required"
        else:
            assert opt_outs == []
            status, queued = await engine.send(template("spring_sale"))
            assert status == 202, queued
            await engine.status_becomes(queued["id"], "delivered")


@pytest.mark.parametrize(("platform", "code", "learns"), [("other_codes", 63032, True), ("other_codes", 132015, False)])
async def test_a_failed_status_pauses_a_template_only_by_the_providers_own_code(
    database_url: str, platform: str, code: int, learns: bool
) -> None:
    async for engine in engine_for(database_url, plugins=(OtherCodesPlugin(),), platform=platform):
        await engine.daemon.hub.storage.policy.upsert_template("fake", _approved("order_update", "UTILITY"))
        engine.server.fail_later[USER] = code
        _, body = await engine.send(template("order_update"))
        failed = await engine.status_becomes(body["id"], "failed")
        assert failed["error"]["code"] == str(code)

        if learns:
            await wait_until(functools.partial(_paused, engine))
            status, refused = await engine.send(template("order_update"))
            assert status == 422 and refused["error"]["code"] == "template_not_approved"
        else:
            # The reason is the provider's reading of its code: one it does not know is only refused.
            assert "the provider refused the message" in failed["error"]["message"]
            assert await _template_status(engine, "order_update") == "APPROVED"


async def _paused(engine: Engine) -> bool:
    return await _template_status(engine, "order_update") == "PAUSED"
