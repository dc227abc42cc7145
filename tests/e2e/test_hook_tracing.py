"""WAHUB_TRACE_HOOKS=1 under `wahub run -c config.example.yaml`: a log line per hook call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.daemon import REPO, free_port, start_daemon


def test_trace_hooks_logs_the_daemons_hook_calls_with_their_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copy(REPO / "faq.example.yaml", tmp_path)  # the example's FAQ (!include)
    monkeypatch.setenv("WAHUB_TRACE_HOOKS", "1")
    daemon = start_daemon(tmp_path / "config.yaml", tmp_path, free_port())
    try:
        daemon.wait_healthy(within=10.0)
    finally:
        assert daemon.terminate(within=10.0) == 0
    lines = [line for line in daemon.log.read_text().splitlines() if " wahub.hooks: " in line]
    routes = [line for line in lines if " wahub.hooks: hook register_routes: " in line]
    assert routes, daemon.log.read_text()
    assert "wahub.plugins.providers.sandbox.provider" in routes[0]
    assert "hub=<Hub>" in routes[0]
    assert any(" wahub.hooks: hook lifespan: " in line for line in lines), lines
