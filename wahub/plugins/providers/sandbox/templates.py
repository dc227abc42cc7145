"""The sandbox's message templates: a simulated template account.

The sandbox manages templates as a Cloud API account does (it is a
``wahub.core.policy.template_plan.TemplateAccount``), so ``wahub templates
plan|apply`` runs offline. Its templates live in the ``templates`` table the
send policy reads, with their components, so they survive restarts. Review is
simulated: a created or edited template is ``APPROVED`` at once. The
``templates:`` option's entries are stored at start-up with a BODY made from
their ``text``; each template's id is ``sbx.<name>.<language>``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from wahub.core.canonical.placeholders import is_positional, placeholders
from wahub.core.errors import ProviderError
from wahub.core.provider import Provider
from wahub.core.storage.policy import Template

#: The categories a template may have.
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
#: The status every sandbox template gets: its review is simulated.
APPROVED = "APPROVED"


def template_id(name: str, language: str) -> str:
    """The sandbox's id of a template language."""
    return f"sbx.{name}.{language}"


def configured_components(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The components of a ``templates:`` entry: one BODY, its ``text``."""
    return [{"type": "BODY", "text": entry["text"]}]


def parameter_format(components: list[Any]) -> str:
    """``NAMED`` when a header or body placeholder is named (or an example
    names its parameters), else ``POSITIONAL``."""
    for component in components:
        if not isinstance(component, Mapping):
            continue
        names = placeholders(str(component.get("text") or ""))
        example = component.get("example")
        named_examples = isinstance(example, Mapping) and any(str(key).endswith("_named_params") for key in example)
        if named_examples or any(not is_positional(name) for name in names):
            return "NAMED"
    return "POSITIONAL"


def _checked(definition: Mapping[str, Any]) -> tuple[str, str, str, list[Any]]:
    """The name, language, category and components of a create body; a
    ``ProviderError`` names the field that is wrong."""
    name, language = definition.get("name"), definition.get("language")
    if not isinstance(name, str) or not name:
        raise ProviderError("the template needs 'name': its name, as text", code="100")
    if not isinstance(language, str) or not language:
        raise ProviderError(f"template {name!r} needs 'language': a language code such as en", code="100")
    category = str(definition.get("category") or "").upper()
    if category not in CATEGORIES:
        raise ProviderError(f"template {name!r}: 'category' must be one of {', '.join(CATEGORIES)}", code="100")
    components = definition.get("components")
    if not isinstance(components, list) or not components:
        raise ProviderError(f"template {name!r}: 'components' must be a list with a BODY", code="100")
    return name, language, category, components


class SandboxAccount(Provider):
    """Templates kept in the ``templates`` table, approved as they are created."""

    async def store_configured_templates(self) -> None:
        """Store the ``templates:`` option's entries, approved, with a BODY from their text."""
        for entry in self.config["templates"]:
            template = Template(entry["name"], entry["language"], entry["category"], APPROVED)
            await self.hub.storage.policy.upsert_template(
                self.name,
                template,
                components=configured_components(entry),
                external_id=template_id(entry["name"], entry["language"]),
            )

    async def template_components(self, name: str, language: str) -> list[dict[str, Any]] | None:
        """The components of the approved template ``name`` in ``language``, or None without one."""
        for row in await self.hub.storage.policy.templates(self.name):
            if (row["name"], row["language"]) == (name, language) and row["status"] == APPROVED:
                return list(row["components"] or [])
        for entry in self.config["templates"]:
            if (entry["name"], entry["language"]) == (name, language):
                return configured_components(entry)
        return None

    async def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        """Every stored template, as Meta lists its template objects."""
        for row in await self.hub.storage.policy.templates(self.name):
            components = list(row["components"] or [])
            yield {
                "id": row["external_id"] or template_id(row["name"], row["language"]),
                "name": row["name"],
                "language": row["language"],
                "category": row["category"],
                "status": row["status"],
                "parameter_format": parameter_format(components),
                "components": components,
            }

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> dict[str, Any]:
        """Store a template (Meta's create body) as approved; a media header's
        ``example.header_file`` (relative to ``files_from``) must exist."""
        name, language, category, components = _checked(definition)
        for row in await self.hub.storage.policy.templates(self.name):
            if (row["name"], row["language"]) == (name, language):
                raise ProviderError(f"template {name!r} already exists in {language}", code="template_exists")
        components = [await self._with_handle(component, files_from or Path()) for component in components]
        identifier = template_id(name, language)
        await self.hub.storage.policy.upsert_template(
            self.name, Template(name, language, category, APPROVED), components=components, external_id=identifier
        )
        return {"id": identifier, "status": APPROVED, "category": category}

    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        """Change a template's ``components`` or ``category``; it stays approved."""
        row = await self._row(template_id)
        category = str(changes.get("category") or row["category"]).upper()
        if category not in CATEGORIES:
            raise ProviderError(f"'category' must be one of {', '.join(CATEGORIES)}, not {category!r}", code="100")
        components = changes.get("components", row["components"])
        if not isinstance(components, list) or not components:
            raise ProviderError(f"template {row['name']!r}: 'components' must be a list with a BODY", code="100")
        template = Template(row["name"], row["language"], category, APPROVED)
        await self.hub.storage.policy.upsert_template(self.name, template, components=components)

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        """Delete a template in every language, or only the version ``template_id``."""
        language = None if template_id is None else (await self._row(template_id))["language"]
        if not await self.hub.storage.policy.delete_templates(self.name, name, language):
            raise ProviderError(f"no template named {name!r} in the sandbox {self.name}", code="not_found")

    async def upload_handle(self, path: Path) -> str:
        """A handle for a local file (a media header's example); the file must exist."""
        try:
            digest = hashlib.sha256(await asyncio.to_thread(path.read_bytes)).hexdigest()[:16]
        except OSError as exc:
            raise ProviderError(f"cannot read {path} for a handle: {exc.strerror or exc}", code="no_file") from None
        return f"sbx.file.{digest}"

    async def _row(self, identifier: str) -> dict[str, Any]:
        for row in await self.hub.storage.policy.templates(self.name):
            if (row["external_id"] or template_id(row["name"], row["language"])) == identifier:
                return row
        raise ProviderError(f"no template with id {identifier!r} in the sandbox {self.name}", code="not_found")

    async def _with_handle(self, component: Any, files_from: Path) -> Any:
        """``component`` with its ``example.header_file`` given as a ``header_handle``."""
        example = component.get("example") if isinstance(component, Mapping) else None
        if not isinstance(example, Mapping) or "header_file" not in example:
            return component
        handle = await self.upload_handle(files_from / str(example["header_file"]))
        others = {key: value for key, value in example.items() if key != "header_file"}
        return {**component, "example": {**others, "header_handle": [handle]}}
