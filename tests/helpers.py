"""Helpers shared by tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_plugin(site: Path, name: str, source: str) -> Path:
    """Install module ``name`` with a ``wahub`` entry point into ``site``, as pip would."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[wahub]\n{name} = {name}\n")
    return site
