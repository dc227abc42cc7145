"""The placeholders of a template's text: ``{{1}}`` (positional) or
``{{order_id}}`` (named), as written in a template's header, body and URL
button, read the same way where templates are defined (the templates
directory) and where they are sent (the parameters a send must give)."""

from __future__ import annotations

import re

#: ``{{ 1 }}`` or ``{{name}}``: Meta allows spaces inside the braces; a name
#: is lowercase letters, digits and underscores, starting with a letter.
PLACEHOLDER = re.compile(r"\{\{\s*([0-9]+|[a-z][a-z0-9_]*)\s*\}\}")


def placeholders(text: str) -> list[str]:
    """The placeholders in ``text``, in order of appearance, repeats kept
    (``"{{1}} and {{2}}"`` -> ``["1", "2"]``)."""
    return PLACEHOLDER.findall(text)


def is_positional(name: str) -> bool:
    """Whether a placeholder is positional (``{{1}}``) rather than named."""
    return name.isdigit()
