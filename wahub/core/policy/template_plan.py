"""What ``wahub templates plan|apply`` does: compare the templates directory
with a provider's templates, and carry the difference out.

``plan`` lists the provider's templates and gives, per template and language,
a ``Step``: ``create`` (only in the directory), ``edit`` (its components,
category or parameter format differ), ``delete`` (only at the provider, with
``prune``), ``keep`` (only at the provider, without ``prune``) or ``same``.
Both sides are normalised the same way before they are compared (upper-case
types and formats, empty values and media handles left out), so a template
that did not change plans nothing. ``apply`` carries the steps out one by one,
a failing step (a provider's refusal, a network failure, a header file that
cannot be read) reported and the rest still done.

A provider that manages templates is a ``TemplateAccount``; the core names
only what it needs, not which providers can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiohttp

from wahub.core.config.templates import TemplateDefinition
from wahub.core.errors import ProviderError

__all__ = ["Action", "Outcome", "Step", "TemplateAccount", "apply", "plan"]

#: Statuses of templates that are going away: they count as absent.
GONE_STATUSES = frozenset({"DELETED", "PENDING_DELETION"})
#: Keys compared only as Meta reads them (upper-case).
_ENUM_KEYS = frozenset({"type", "format", "otp_type"})
#: Examples that name an uploaded file: a new handle or URL each time, so never compared.
_MEDIA_EXAMPLES = frozenset({"header_handle", "header_file"})


@runtime_checkable
class TemplateAccount(Protocol):
    """A provider whose templates wahub can list, create, edit and delete."""

    name: str

    def list_templates(self) -> AsyncIterator[dict[str, Any]]:
        """Every template of the account (Meta's template objects)."""

    async def create_template(self, definition: Mapping[str, Any], *, files_from: Path | None = None) -> Any:
        """Submit a template (Meta's create body); media headers' files are read from ``files_from``."""

    async def edit_template(self, template_id: str, changes: Mapping[str, Any]) -> None:
        """Change a template's components, category or parameter format."""

    async def delete_template(self, name: str, template_id: str | None = None) -> None:
        """Delete a template in every language, or only the version ``template_id``."""

    async def upload_handle(self, path: Path) -> str:
        """Upload a file for a media header's example; returns its handle."""


class Action(StrEnum):
    CREATE = "create"
    EDIT = "edit"
    DELETE = "delete"
    KEEP = "keep"
    SAME = "same"


#: The actions ``apply`` carries out; the others change nothing.
CHANGES = frozenset({Action.CREATE, Action.EDIT, Action.DELETE})


@dataclass(frozen=True)
class Step:
    """One template language and what ``apply`` does with it."""

    action: Action
    name: str
    language: str
    #: What differs, for an edit ("components", "category MARKETING -> UTILITY").
    reasons: tuple[str, ...] = ()
    #: The provider's id of the template (edit, delete, keep, same).
    template_id: str | None = None
    #: The create body, or the edit's changes.
    body: Mapping[str, Any] = field(default_factory=dict)
    #: Delete every language at once (all of the name's languages go).
    whole: bool = False

    def describe(self) -> str:
        what = f"{self.name} ({self.language})"
        if self.action is Action.EDIT:
            return f"edit {what}: {', '.join(self.reasons)} differ"
        if self.action is Action.KEEP:
            return f"kept {what} (not in the directory; --prune deletes it)"
        if self.action is Action.SAME:
            return f"unchanged {what}"
        return f"{self.action} {what}"


@dataclass(frozen=True)
class Outcome:
    """What one applied step did: ``error`` is None when it worked."""

    step: Step
    detail: str = ""
    error: str | None = None


async def plan(
    account: TemplateAccount, definitions: Sequence[TemplateDefinition], *, prune: bool = False
) -> list[Step]:
    """The steps that make ``account``'s templates those of ``definitions``.

    Raises ``ProviderError`` when the templates cannot be listed.
    """
    listed: dict[tuple[str, str], dict[str, Any]] = {}
    async for item in account.list_templates():
        if str(item.get("status", "")).upper() not in GONE_STATUSES:
            listed[(str(item.get("name")), str(item.get("language")))] = item
    steps: list[Step] = []
    wanted: set[tuple[str, str]] = set()
    for definition in definitions:
        for language in definition.languages:
            wanted.add((definition.name, language))
            steps.append(_compare(definition, language, listed.get((definition.name, language))))
    for (name, language), item in sorted(listed.items()):
        if (name, language) in wanted:
            continue
        # A name the directory no longer has goes in every language at once.
        whole = name not in {wanted_name for wanted_name, _ in wanted}
        action = Action.DELETE if prune else Action.KEEP
        steps.append(Step(action, name, language, template_id=_id(item), whole=whole))
    return steps


def _compare(definition: TemplateDefinition, language: str, item: dict[str, Any] | None) -> Step:
    name, body = definition.name, definition.create_body(language)
    if item is None:
        return Step(Action.CREATE, name, language, body=body)
    reasons: list[str] = []
    changes: dict[str, Any] = {}
    if comparable(item.get("components") or []) != comparable(body["components"]):
        reasons.append("components")
    listed_category = str(item.get("category") or "").upper()
    if listed_category != definition.category:
        reasons.append(f"category {listed_category or '(none)'} -> {definition.category}")
        changes["category"] = definition.category
    listed_format = str(item.get("parameter_format") or "POSITIONAL").upper()
    if listed_format != body["parameter_format"]:
        reasons.append(f"parameter_format {listed_format} -> {body['parameter_format']}")
        changes["parameter_format"] = body["parameter_format"]
    if not reasons:
        return Step(Action.SAME, name, language, template_id=_id(item))
    changes["components"] = body["components"]
    return Step(Action.EDIT, name, language, reasons=tuple(reasons), template_id=_id(item), body=changes)


def comparable(value: Any, key: str = "") -> Any:
    """``value`` as compared: enums upper-case, empty values and media handles left out."""
    if isinstance(value, Mapping):
        pairs = ((str(k), comparable(v, str(k))) for k, v in value.items() if str(k) not in _MEDIA_EXAMPLES)
        return {k: v for k, v in pairs if _present(v)}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if key in _ENUM_KEYS and isinstance(value, str):
        return value.upper()
    return value


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _id(item: Mapping[str, Any]) -> str | None:
    return str(item["id"]) if item.get("id") is not None else None


async def apply(account: TemplateAccount, steps: Sequence[Step], *, files_from: Path) -> list[Outcome]:
    """Carry out the steps that change something, in order, each failure kept and the rest still done."""
    outcomes: list[Outcome] = []
    deleted_names: set[str] = set()
    for step in steps:
        if step.action not in CHANGES:
            continue
        if step.whole and step.name in deleted_names:
            outcomes.append(Outcome(step, detail="deleted with its other languages"))
            continue
        try:
            detail = await _carry_out(account, step, files_from)
        except (ProviderError, aiohttp.ClientError, OSError) as error:
            outcomes.append(Outcome(step, error=_failure(error)))
            continue
        if step.action is Action.DELETE and step.whole:
            deleted_names.add(step.name)
        outcomes.append(Outcome(step, detail=detail))
    return outcomes


def _failure(error: Exception) -> str:
    """What a failed step reports: the provider's reason and code, or what went wrong on the way."""
    if isinstance(error, ProviderError):
        return f"{error}" + (f" (code {error.code})" if error.code else "")
    if isinstance(error, aiohttp.ClientError):
        return f"the provider could not be reached: {error or type(error).__name__}"
    if isinstance(error, TimeoutError):
        return "the provider did not answer in time"
    return f"a file could not be read: {error}"


async def _carry_out(account: TemplateAccount, step: Step, files_from: Path) -> str:
    if step.action is Action.CREATE:
        answer = await account.create_template(step.body, files_from=files_from)
        status = answer.get("status") if isinstance(answer, Mapping) else None
        template_id = answer.get("id") if isinstance(answer, Mapping) else None
        return f"created, {status or 'submitted'}" + (f" (id {template_id})" if template_id else "")
    if step.action is Action.EDIT:
        if step.template_id is None:
            raise ProviderError(f"the provider listed {step.name} ({step.language}) without an id", code="no_id")
        changes = dict(step.body)
        if "components" in changes:
            changes["components"] = await _with_handles(account, changes["components"], files_from)
        await account.edit_template(step.template_id, changes)
        return "edited, back in review"
    if step.whole:
        await account.delete_template(step.name)
        return "deleted (every language)"
    await account.delete_template(step.name, step.template_id)
    return "deleted"


async def _with_handles(account: TemplateAccount, components: list[Any], files_from: Path) -> list[Any]:
    """``components`` with each media header's ``example.header_file`` uploaded and
    given as its ``header_handle`` (an edit, unlike a create, takes only handles)."""
    result = []
    for component in components:
        example = component.get("example") if isinstance(component, Mapping) else None
        if isinstance(example, Mapping) and "header_file" in example:
            handle = await account.upload_handle(files_from / str(example["header_file"]))
            others = {key: value for key, value in example.items() if key != "header_file"}
            component = {**component, "example": {**others, "header_handle": [handle]}}
        result.append(component)
    return result
