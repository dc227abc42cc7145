"""The installed package (a wheel, as the Dockerfile installs it) has everything it runs on."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_copy(target: Path) -> Path:
    """The project's own files only: no build/ or egg-info left by earlier installs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


# --no-build-isolation: build with the setuptools and wheel of the test extra,
# so the test needs no package index.
def test_wheel_carries_migrations_and_web_assets(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    [wheel] = (tmp_path / "dist").glob("wahub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {name for name in names if name.startswith("wahub/core/storage/migrations/")}
    assert "wahub/core/storage/migrations/env.py" in migrations
    assert {p.name for p in (REPO / "wahub/core/storage/migrations/versions").glob("*.py")} <= {
        Path(name).name for name in migrations
    }
    assert {"wahub/web/sandbox/index.html", "wahub/web/sandbox/sandbox.js", "wahub/py.typed"} <= names
