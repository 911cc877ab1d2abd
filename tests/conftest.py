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
def temporary_attack():
    """Register attack classes for one test (use as a decorator); they leave the registry when it ends."""
    from robustbench_cli.attacks.base import REGISTRY, register

    added = []

    def add(cls):
        register(cls)
        added.append(cls.name)
        return cls

    yield add
    for name in added:
        REGISTRY.pop(name)


@pytest.fixture
def run_cli():
    """Run the CLI through Typer's runner; returns the result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from robustbench_cli.cli import app

    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _run


SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def pytest_addoption(parser):
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite tests/snapshots/* from the current output (or set ROBUST_UPDATE_SNAPSHOTS=1)")


@pytest.fixture
def snapshot(request):
    """Compare text with tests/snapshots/NAME; --update-snapshots or ROBUST_UPDATE_SNAPSHOTS=1 rewrites it."""
    update = request.config.getoption("--update-snapshots") or os.environ.get("ROBUST_UPDATE_SNAPSHOTS") == "1"

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"no snapshot {path}: run pytest with --update-snapshots (or ROBUST_UPDATE_SNAPSHOTS=1) to create it")
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            import difflib

            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "snapshot", "now", n=2))
            pytest.fail(f"output differs from {path} (rerun with --update-snapshots if the change is intended):\n{diff[:4000]}")

    return check


def with_data_spec(kw: dict, default: str = "mnist:train", **defaults) -> dict:
    """Training configs take the data as one DataSpec: fold the flat data options of a test into it."""
    from robustbench_cli.core.data import DataSpec

    keys = {"data": "source", "n": "n", "offset": "offset", "shuffle": "shuffle", "data_layout": "layout",
            "data_scale": "scale"}
    spec = {**defaults, **{keys[k]: kw.pop(k) for k in list(kw) if k in keys}}
    kw["data"] = DataSpec(**{"source": default, **spec})
    return kw
