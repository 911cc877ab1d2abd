"""The ``robust`` entry point: the application with every command registered."""

from __future__ import annotations

from robustbench_cli.cli import commands, craft, judge, train  # noqa: F401  (each registers its commands on app)
from robustbench_cli.cli.app import app


def main() -> None:
    """Console entry point: Typer's standalone mode (usage errors exit 2); commands map their own errors."""
    app()
