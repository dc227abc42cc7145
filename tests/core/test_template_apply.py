"""``apply`` goes on past a step that fails on the way to the provider: a
header file that cannot be read, a provider that cannot be reached."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from wahub.core.config.templates import load_templates
from wahub.core.policy.template_plan import Action, Step, apply


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


class UnreachableAccount:
    """An account whose creates read their header files from disk and whose
    deletes go to a port where nothing listens."""

    name = "main"

    def __init__(self) -> None:
        self.created: list[str] = []
        self.url = f"http://127.0.0.1:{closed_port()}"

    async def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        for item in ():
            yield item

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> Any:
        for component in definition["components"]:
            example = component.get("example") or {}
            if "header_file" in example:
                await self.upload_handle((files_from or Path()) / example["header_file"])
        self.created.append(definition["name"])
        return {"id": "1", "status": "PENDING"}

    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        raise AssertionError("no edit is planned")

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        async with aiohttp.ClientSession() as session, session.delete(f"{self.url}/{name}"):
            pass

    async def upload_handle(self, path: Path) -> str:
        return f"handle-{len(await asyncio.to_thread(path.read_bytes))}"


HEADER = """\
name: {name}
category: UTILITY
languages:
  en:
    components:
      - {{type: HEADER, format: IMAGE, example: {{header_file: {name}.png}}}}
      - {{type: BODY, text: Hi}}
"""


async def test_a_failing_file_or_connection_is_reported_and_the_rest_still_done(tmp_path: Path) -> None:
    for name in ("banner", "promo"):
        (tmp_path / f"{name}.yaml").write_text(HEADER.format(name=name))
        (tmp_path / f"{name}.png").write_bytes(b"\x89PNG")
    definitions = load_templates(tmp_path)
    (tmp_path / "banner.png").unlink()  # gone between the check and the apply
    account = UnreachableAccount()
    steps = [
        Step(Action.CREATE, "banner", "en", body=definitions[0].create_body("en")),
        Step(Action.DELETE, "legacy", "en", template_id="9", whole=True),
        Step(Action.CREATE, "promo", "en", body=definitions[1].create_body("en")),
    ]
    outcomes = await apply(account, steps, files_from=tmp_path)
    assert [outcome.step.name for outcome in outcomes] == ["banner", "legacy", "promo"]
    assert outcomes[0].error is not None and "a file could not be read" in outcomes[0].error
    assert "banner.png" in outcomes[0].error
    assert outcomes[1].error is not None and outcomes[1].error.startswith("the provider could not be reached")
    assert (outcomes[2].error, outcomes[2].detail) == (None, "created, PENDING (id 1)")
    assert account.created == ["promo"]
