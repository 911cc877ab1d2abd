"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent (a fresh machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUST_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or a skip naming what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (../shared/data is not on this machine)")
    return p


@pytest.fixture
def run_cli():
    """Run the CLI through Typer's runner; returns the result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from robustbench_cli.cli import app

    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _run
