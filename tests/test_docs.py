"""Every hook is documented for plugin authors, and the plugin guide's CRM
example is the code its tests run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wahub import hookspecs

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs" / "hooks.md"
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "wahub_spec"))


def test_hookspecs_found() -> None:
    assert "route_message" in HOOKS and "register_crm_backends" in HOOKS and len(HOOKS) == 15


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


ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"
PACKAGE = Path(__file__).parents[1] / "wahub"


def _named_files() -> list[str]:
    text = ARCHITECTURE.read_text()
    return sorted(set(re.findall(r"`([\w/]+\.py)`", text)))


def test_architecture_names_files() -> None:
    assert "inbound/intake.py" in _named_files() and "outbound/dispatcher.py" in _named_files()


@pytest.mark.parametrize("name", _named_files())
def test_architecture_names_only_files_that_exist(name: str) -> None:
    found = [path for path in PACKAGE.rglob("*.py") if path.as_posix().endswith("/" + name)]
    assert found, f"docs/architecture.md names {name}, which is not in the package"


def test_architecture_layers_match_the_lint_contract() -> None:
    """The layers the page shows are the ones `make lint` checks."""
    config = (Path(__file__).parents[1] / "setup.cfg").read_text()
    layers = config.split("[importlinter:contract:layers]")[1].split("layers =")[1].split("\n[")[0]
    shown = ARCHITECTURE.read_text().split("## Who may import whom")[1].split("\n## ")[0]
    names = set(re.findall(r"[\w.]+", shown))
    for module in re.findall(r"wahub[\w.]*", layers):
        forms = {module, module.removeprefix("wahub."), module.removeprefix("wahub.core.")}
        assert forms & names, f"docs/architecture.md does not show the layer {module}"


EXAMPLE = ROOT / "docs" / "examples" / "wahub-tinycrm"


def test_the_crm_example_in_the_plugin_guide_is_its_files_and_short() -> None:
    guide = (ROOT / "docs" / "writing-plugins.md").read_text()
    plugin = (EXAMPLE / "wahub_tinycrm" / "plugin.py").read_text()
    assert f"```python\n{plugin}```" in guide
    assert f"```python\n{(EXAMPLE / 'tests' / 'test_plugin.py').read_text()}```" in guide
    assert len(plugin.splitlines()) < 150


def test_the_crm_example_passes_its_own_tests() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "tests"],
        cwd=EXAMPLE,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
