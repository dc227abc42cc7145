"""Every hook is documented for plugin authors."""

from __future__ import annotations

from pathlib import Path

import pytest

from wahub import hookspecs

DOCS = Path(__file__).parents[1] / "docs" / "hooks.md"
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "wahub_spec"))


def test_hookspecs_found() -> None:
    assert "route_message" in HOOKS and "account_update" in HOOKS and len(HOOKS) == 11


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_section_in_docs(hook: str) -> None:
    assert f"\n## {hook}\n" in DOCS.read_text(), f"docs/hooks.md lacks a '## {hook}' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_kind_in_docs_matches_spec(hook: str) -> None:
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith(f"| `{hook}("))
    assert row.rstrip(" |").endswith("sync only" if hook in hookspecs.SYNC_ONLY_HOOKS else "may be async")


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_has_docstring(hook: str) -> None:
    assert (getattr(hookspecs, hook).__doc__ or "").strip()
