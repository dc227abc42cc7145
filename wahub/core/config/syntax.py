"""YAML syntax errors said in plain words.

PyYAML reports where its parser got stuck, in the parser's terms ("expected
<block end>, but found '<block mapping start>'"). ``syntax_problem`` looks at
the error and at the lines of the file and, for the usual slips (a tab used
for indentation, a key at the wrong depth, a key without its colon, an
unclosed quote or bracket, a stray ``- `` among the keys of a mapping), says
what is wrong at the line and column where it was written. When no hint
applies, the parser's own message is kept.
"""

from __future__ import annotations

import yaml

from wahub.core.errors import ConfigProblem

_BRACKETS = {"flow sequence": ("[", "]", "list"), "flow mapping": ("{", "}", "mapping")}


def syntax_problem(file: str, text: str, err: yaml.YAMLError) -> ConfigProblem:
    """The problem to report for ``err``, raised while parsing ``text`` (the contents of ``file``)."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return ConfigProblem(file, None, "", f"invalid YAML: {err}")
    hint = _hint(text.splitlines(), err)
    if hint is not None:
        line, column, message = hint
        return ConfigProblem(file, line, "", message, column)
    mark = err.problem_mark or err.context_mark
    message = f"invalid YAML: {err.problem or err.context}"
    if err.context and err.problem and err.context_mark is not None:
        message += f" ({err.context} at line {err.context_mark.line + 1})"
    if mark is None:
        return ConfigProblem(file, None, "", message)
    return ConfigProblem(file, mark.line + 1, "", message, mark.column + 1)


def _hint(lines: list[str], err: yaml.MarkedYAMLError) -> tuple[int, int, str] | None:
    """``(line, column, message)``, 1-based, for a slip this module recognises, else None."""
    problem, context = err.problem or "", err.context or ""
    at, opened = err.problem_mark, err.context_mark
    if at is None:
        return None
    if "'\\t'" in problem:
        return _tab(lines, at.line, at.column)
    if context == "while scanning a quoted scalar" and opened is not None:
        quote = _char(lines, opened.line, opened.column) or '"'
        return (
            opened.line + 1,
            opened.column + 1,
            f"the quote {quote} opened here is never closed: end the value with {quote}",
        )
    for kind, (start, end, noun) in _BRACKETS.items():
        if context == f"while parsing a {kind}" and opened is not None and problem.startswith("expected ','"):
            return (
                opened.line + 1,
                opened.column + 1,
                f"the {start} opened here is never closed: end the {noun} with {end} "
                f"(or a comma is missing between its items)",
            )
    if context == "while scanning a simple key" and opened is not None:
        return _missing_colon(lines, opened.line)
    if problem == "mapping values are not allowed here":
        return _misplaced_colon(lines, at.line, at.column)
    if problem.startswith("expected '<document start>', but found '<block mapping start>'"):
        # The first key is indented, and a later one is not.
        return (
            at.line + 1,
            at.column + 1,
            "the indentation here does not match the lines above (a key must line up with its siblings)",
        )
    if problem.startswith("expected <block end>, but found"):
        found = problem.removeprefix("expected <block end>, but found").strip()
        if found in ("'-'", "'<block sequence start>'"):
            return (
                at.line + 1,
                at.column + 1,
                'a list item ("- ") cannot stand among the keys of a mapping: '
                'remove the "- ", or put the list under a key of its own',
            )
        return (
            at.line + 1,
            at.column + 1,
            "the indentation here does not match the lines above (a key must line up with its siblings)",
        )
    return None


def _tab(lines: list[str], line: int, column: int) -> tuple[int, int, str]:
    text = lines[line] if line < len(lines) else ""
    if not text[:column].strip(" \t"):
        return line + 1, column + 1, "a tab character is used for indentation here: YAML indents with spaces only"
    return line + 1, column + 1, "a tab character here cannot start a value: use spaces"


def _missing_colon(lines: list[str], line: int) -> tuple[int, int, str] | None:
    text = lines[line] if line < len(lines) else ""
    if ":" in text:
        return None
    return line + 1, _indent(text) + 1, f"{text.strip()!r} has no colon: write a key as 'key: value'"


def _misplaced_colon(lines: list[str], line: int, column: int) -> tuple[int, int, str] | None:
    """A ':' the parser refused: a value with ': ' in it, a key without colon above, or a deeper indent."""
    text = lines[line] if line < len(lines) else ""
    before = text[:column]
    if ": " in before.lstrip(" -"):
        return (
            line + 1,
            column + 1,
            "this value contains ': ', which YAML reads as a new key: put the value in quotes",
        )
    previous = _previous_line(lines, line)
    if previous is None:
        return None
    above = lines[previous]
    content = above.strip().removeprefix("- ")
    if ":" not in content:
        return previous + 1, _indent(above) + 1, f"{above.strip()!r} has no colon: write a key as 'key: value'"
    if ": " not in content and not content.endswith(":"):
        colon = above.index(":", _indent(above))
        return previous + 1, colon + 1, "a colon after a key must be followed by a space ('key: value')"
    if _indent(text) > _indent(above):
        return (
            line + 1,
            _indent(text) + 1,
            "this line is indented deeper than the key above it, which already has a value "
            "(a key must line up with its siblings)",
        )
    return None


def _previous_line(lines: list[str], line: int) -> int | None:
    for index in range(min(line, len(lines)) - 1, -1, -1):
        stripped = lines[index].strip()
        if stripped and not stripped.startswith("#"):
            return index
    return None


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _char(lines: list[str], line: int, column: int) -> str:
    text = lines[line] if line < len(lines) else ""
    return text[column] if column < len(text) else ""
