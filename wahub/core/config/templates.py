"""The templates directory (``wahub.templates_dir``): message templates as code.

Each ``*.yaml`` file of the directory is one template, written in Meta's create
shape: ``name``, ``category``, optional ``parameter_format`` (``positional`` or
``named``) and ``languages: {<code>: {components: [...]}}``. ``load_templates``
reads every file with the configuration's YAML loader and checks it the way
Meta's review would refuse it (one body, placeholders ``{{1}}..{{n}}`` or
named, examples for each placeholder, the same parameters in every language,
lengths and button counts), so a broken file stops start-up with all its
problems at once, each as ``file:line: path: message``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wahub.core.canonical.placeholders import PLACEHOLDER, is_positional, placeholders
from wahub.core.config.loader import SECRETS_FILE, load_yaml
from wahub.core.config.nodes import mark_of, to_plain
from wahub.core.config.problems import Checker, show, sorted_problems
from wahub.core.config.template_shapes import (
    BUTTON_LIMITS,
    BUTTON_SCHEMAS,
    BUTTON_TYPES,
    COMPONENT_SCHEMAS,
    COMPONENT_TYPES,
    FILE_SCHEMA,
    LANGUAGE_PATTERN,
    LANGUAGE_SCHEMA,
    MAX_BODY_TEXT,
    MAX_BUTTON_LABEL,
    MAX_BUTTONS,
    MAX_COPY_CODE,
    MAX_FOOTER_TEXT,
    MAX_HEADER_TEXT,
    MAX_NAME,
    MAX_URL,
    MEDIA_FORMATS,
    NAME_PATTERN,
)
from wahub.core.errors import ConfigError, ConfigProblem

__all__ = ["TemplateDefinition", "load_templates"]

_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TemplateDefinition:
    """One template of the directory, checked: its components per language are
    Meta's create shape (types and formats upper-case, a header's format filled)."""

    name: str
    category: str
    parameter_format: str
    languages: Mapping[str, list[dict[str, Any]]]
    file: str

    def create_body(self, language: str) -> dict[str, Any]:
        """Meta's create body for one language of the template."""
        return {
            "name": self.name,
            "language": language,
            "category": self.category,
            "parameter_format": self.parameter_format.upper(),
            "components": self.languages[language],
        }


def load_templates(directory: Path) -> list[TemplateDefinition]:
    """Every template of ``directory``, by name; none when it does not exist.

    Raises ``ConfigError`` with every problem of every file.
    """
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), None, "", "the templates directory is not a directory")])
    paths = sorted(p for p in directory.iterdir() if p.suffix in _FILE_SUFFIXES and p.name != SECRETS_FILE)
    problems: list[ConfigProblem] = []
    found: dict[str, TemplateDefinition] = {}
    for path in paths:
        try:
            tree, load_problems = load_yaml(path)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        definition, file_problems = _check_file(path, tree, load_problems)
        problems.extend(file_problems)
        if definition is not None and definition.name in found:
            message = f"the template {definition.name} is also in {Path(found[definition.name].file).name}"
            mark = mark_of(tree["name"])
            problems.append(ConfigProblem(str(path), mark.line if mark else None, "name", message))
        elif definition is not None:
            found[definition.name] = definition
    if problems:
        raise ConfigError(sorted_problems(problems))
    return [found[name] for name in sorted(found)]


@dataclass
class _Template:
    """What the checks of one file share."""

    checker: Checker
    category: str
    parameter_format: str
    #: The templates directory, where a media header's ``header_file`` is.
    directory: Path


def _check_file(
    path: Path, tree: Any, load_problems: list[ConfigProblem]
) -> tuple[TemplateDefinition | None, list[ConfigProblem]]:
    checker = Checker(tree)
    if not isinstance(tree, dict):
        checker.add([], "a template file must be a mapping (name:, category:, languages:)")
        return None, checker.finish(load_problems)
    top = checker.run(FILE_SCHEMA, to_plain(tree), [])
    if top is None:
        return None, checker.finish(load_problems)
    _check_name(path, top["name"], checker)
    template = _Template(checker, top["category"], top["parameter_format"], path.parent)
    languages: dict[str, list[dict[str, Any]]] = {}
    first: tuple[str, dict[str, list[str]]] | None = None
    for code, entry in top["languages"].items():
        prefix = ["languages", code]
        if not isinstance(code, str) or not LANGUAGE_PATTERN.fullmatch(code):
            message = f"{show(code)} is not a template language code: use Meta's form, such as en, en_US or pt_BR"
            checker.add(prefix, message, checker.key_mark(prefix))
            continue
        checked = checker.run(LANGUAGE_SCHEMA, entry, prefix)
        if checked is None:
            continue
        components, signature = _check_components(template, checked["components"], [*prefix, "components"])
        languages[code] = components
        if first is None:
            first = (code, signature)
        else:
            _compare_languages(checker, first, code, signature, [*prefix, "components"])
    problems = checker.finish(load_problems)
    if problems:
        return None, problems
    definition = TemplateDefinition(top["name"], top["category"], top["parameter_format"], languages, str(path))
    return definition, []


def _check_name(path: Path, name: str, checker: Checker) -> None:
    if not NAME_PATTERN.fullmatch(name) or len(name) > MAX_NAME:
        checker.add(
            ["name"], f"{show(name)}: a template name is 1 to {MAX_NAME} lowercase letters, digits and underscores"
        )
    elif path.stem != name:
        checker.add(["name"], f"the template is named {show(name)} but its file is {path.name}: name it {name}.yaml")


def _check_components(
    template: _Template, raw: list[dict[str, Any]], prefix: list[Any]
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The components checked (types upper-case), and the placeholders each part takes."""
    checker, components, signature = template.checker, [], {}
    first_at: dict[str, int] = {}
    for index, component in enumerate(raw):
        path = [*prefix, index]
        kind = component.get("type")
        kind = kind.upper() if isinstance(kind, str) else kind
        if kind not in COMPONENT_TYPES:
            checker.add([*path, "type"], f"expected one of {', '.join(COMPONENT_TYPES)}, got {show(kind)}")
            continue
        if kind in first_at:
            checker.add([*path, "type"], f"a template has one {kind}; the first is components[{first_at[kind]}]")
            continue
        first_at[kind] = index
        checked = checker.run(COMPONENT_SCHEMAS[kind], {**component, "type": kind}, path)
        if checked is None:
            continue
        signature.update(_COMPONENT_CHECKS[kind](template, checked, path))
        components.append(checked)
    if "BODY" not in first_at:
        checker.add(prefix, "a template needs a BODY component")
    return components, signature


def _check_header(template: _Template, header: dict[str, Any], path: list[Any]) -> dict[str, list[str]]:
    checker, text, example = template.checker, header.get("text"), header.get("example") or {}
    if header["format"] != "TEXT":
        if text is not None:
            checker.add([*path, "text"], f"a {header['format']} header has no text")
        if header["format"] in MEDIA_FORMATS and not ({"header_handle", "header_file"} & set(example)):
            checker.add(path, f"a {header['format']} header needs example.header_file or header_handle")
        if "header_file" in example:
            _check_header_file(template, example["header_file"], [*path, "example", "header_file"])
        return {}
    if text is None:
        checker.add(path, "a TEXT header needs its text")
        return {}
    _check_length(checker, [*path, "text"], text, MAX_HEADER_TEXT, "a header's text")
    names = _placeholders(template, text, [*path, "text"])
    if names is None:
        return {}
    if len(names) > 1:
        checker.add([*path, "text"], f"a header has at most one placeholder, not {_shown(names)}")
    _check_examples(template, names, example, path, "header_text")
    return {"header": names}


def _check_header_file(template: _Template, name: str, path: list[Any]) -> None:
    """A header's file is a file inside the templates directory: never an
    absolute path or one leading out of it, which ``apply`` would upload."""
    directory = template.directory.resolve()
    if Path(name).is_absolute() or not (directory / name).resolve().is_relative_to(directory):
        message = f"{show(name)} is outside the templates directory: name a file in {template.directory}"
        template.checker.add(path, message)
    elif not (directory / name).is_file():
        template.checker.add(path, f"no file {show(name)} in the templates directory {template.directory}")


def _check_body(template: _Template, body: dict[str, Any], path: list[Any]) -> dict[str, list[str]]:
    checker, text = template.checker, body.get("text")
    if text is None:
        if template.category != "AUTHENTICATION":
            checker.add(path, "a BODY needs its text")
        return {}
    _check_length(checker, [*path, "text"], text, MAX_BODY_TEXT, "the body's text")
    names = _placeholders(template, text, [*path, "text"])
    if names is not None:
        _check_examples(template, names, body.get("example") or {}, path, "body_text")
    return {"body": names or []}


def _check_footer(template: _Template, footer: dict[str, Any], path: list[Any]) -> dict[str, list[str]]:
    checker, text = template.checker, footer.get("text")
    if text is None:
        if "code_expiration_minutes" not in footer:
            checker.add(path, "a FOOTER needs its text")
        return {}
    _check_length(checker, [*path, "text"], text, MAX_FOOTER_TEXT, "the footer's text")
    if placeholders(text):
        checker.add([*path, "text"], f"a footer has no placeholders, not {_shown(placeholders(text))}")
    return {}


def _check_buttons(template: _Template, component: dict[str, Any], path: list[Any]) -> dict[str, list[str]]:
    checker, buttons, counts = template.checker, component["buttons"], dict.fromkeys(BUTTON_LIMITS, 0)
    if len(buttons) > MAX_BUTTONS:
        checker.add([*path, "buttons"], f"a template has at most {MAX_BUTTONS} buttons, not {len(buttons)}")
    signature: dict[str, list[str]] = {}
    for index, button in enumerate(buttons):
        button_path = [*path, "buttons", index]
        kind = button.get("type")
        kind = kind.upper() if isinstance(kind, str) else kind
        if kind not in BUTTON_TYPES:
            checker.add([*button_path, "type"], f"expected one of {', '.join(BUTTON_TYPES)}, got {show(kind)}")
            continue
        checked = checker.run(BUTTON_SCHEMAS[kind], {**button, "type": kind}, button_path)
        if checked is None:
            continue
        buttons[index] = checked
        if kind in counts:
            counts[kind] += 1
            if counts[kind] == BUTTON_LIMITS[kind] + 1:
                message = f"a template has at most {BUTTON_LIMITS[kind]} {kind} button(s)"
                checker.add([*button_path, "type"], message)
        if isinstance(checked.get("text"), str):
            _check_length(checker, [*button_path, "text"], checked["text"], MAX_BUTTON_LABEL, "a button's label")
        if kind == "URL":
            signature[f"URL button {index}"] = _check_url(checker, checked, button_path)
        elif kind == "COPY_CODE":
            _check_length(checker, [*button_path, "example"], checked["example"], MAX_COPY_CODE, "a copy code")
    return signature


def _check_url(checker: Checker, button: dict[str, Any], path: list[Any]) -> list[str]:
    """A URL button's variable (at most one, ``{{1}}`` at the end) and its example."""
    url = button["url"]
    _check_length(checker, [*path, "url"], url, MAX_URL, "a URL")
    names = placeholders(url)
    if not names:
        return []
    end = PLACEHOLDER.search(url)
    if names != ["1"] or end is None or end.end() != len(url):
        checker.add([*path, "url"], "a URL button has one variable, {{1}}, at the end of its URL")
        return names
    example = button.get("example")
    examples = example if isinstance(example, list) else [] if example is None else [example]
    if len(examples) != 1:
        checker.add(path, "a URL with {{1}} needs one example: the whole URL with a value for it")
    return names


_COMPONENT_CHECKS: dict[str, Callable[[_Template, dict[str, Any], list[Any]], dict[str, list[str]]]] = {
    "HEADER": _check_header,
    "BODY": _check_body,
    "FOOTER": _check_footer,
    "BUTTONS": _check_buttons,
}


def _check_length(checker: Checker, path: list[Any], text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        checker.add(path, f"{what} has {len(text)} characters, more than the {limit} allowed")


def _placeholders(template: _Template, text: str, path: list[Any]) -> list[str] | None:
    """The distinct placeholders of ``text``, or None after reporting why they do not
    fit the template's parameter format (their examples are then not checked)."""
    checker, found = template.checker, list(dict.fromkeys(placeholders(text)))
    reported = len(checker.problems)
    positional = [name for name in found if is_positional(name)]
    named = [name for name in found if not is_positional(name)]
    if positional and named:
        checker.add(path, f"mixes positional ({_shown(positional)}) and named ({_shown(named)}) placeholders")
    elif named and template.parameter_format != "named":
        checker.add(path, f"{_shown(named)} named: set parameter_format: named, or use {{{{1}}}}, {{{{2}}}}...")
    elif positional and template.parameter_format == "named":
        checker.add(path, f"parameter_format is named but {_shown(positional)} positional: use {{{{name}}}}")
    elif positional:
        expected = [str(number) for number in range(1, len(positional) + 1)]
        if sorted(positional, key=int) != expected:
            wanted = f"{{{{1}}}} to {{{{{len(positional)}}}}}"
            checker.add(path, f"placeholders must be {wanted} without gaps, not {_shown(positional)}")
    return found if len(checker.problems) == reported else None


def _check_examples(template: _Template, names: list[str], example: dict[str, Any], path: list[Any], key: str) -> None:
    """The component at ``path`` gives, in ``example.<key>`` (positional) or
    ``example.<key>_named_params`` (named), a value for each placeholder."""
    checker, named_key = template.checker, f"{key}_named_params"
    if not names:
        for extra in (key, named_key):
            if extra in example:
                checker.add([*path, "example", extra], "examples given, but the text has no placeholders")
        return
    if template.parameter_format == "named":
        given = [item["param_name"] for item in example.get(named_key, [])]
        if key in example or named_key not in example:
            shape = "[{param_name, example}, ...]"
            checker.add(path, f"a named template needs example.{named_key}: {shape} for {_shown(names)}")
        elif sorted(given) != sorted(names):
            message = f"gives examples for {_shown(given)}, the text has {_shown(names)}"
            checker.add([*path, "example", named_key], message)
        return
    values = example.get(key)
    if key == "body_text":
        values = values[0] if isinstance(values, list) and len(values) == 1 else None
    if named_key in example or values is None:
        shape = "[[...]] (a list of one list)" if key == "body_text" else "[...]"
        checker.add(path, f"a positional template needs example.{key}: {shape} with a value for {_shown(names)}")
    elif len(values) != len(names):
        checker.add(
            [*path, "example", key], f"gives {len(values)} example(s) for {len(names)} placeholder(s) {_shown(names)}"
        )


def _compare_languages(
    checker: Checker,
    first: tuple[str, dict[str, list[str]]],
    code: str,
    signature: dict[str, list[str]],
    path: list[Any],
) -> None:
    """Every language of a template takes the same parameters as the first one written."""
    first_code, expected = first
    for part in sorted(set(expected) | set(signature)):
        mine, theirs = sorted(signature.get(part, [])), sorted(expected.get(part, []))
        if mine != theirs:
            message = (
                f"the {part} takes {_shown(mine) or 'no placeholders'} but in {first_code} "
                f"{_shown(theirs) or 'no placeholders'}: every language takes the same parameters"
            )
            checker.add(path, message)


def _shown(names: list[str]) -> str:
    return ", ".join(f"{{{{{name}}}}}" for name in names)
