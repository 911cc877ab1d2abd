"""robust: an honest robustness report for image classifiers.

The Python API, loaded on first use so that ``robust --help`` and ``import robustbench_cli`` stay light::

    import robustbench_cli as robust
    report = robust.scan(model, (x, y), threats=["linf:8/255"], preset="quick")

``scan``, ``run``, ``load_report`` and ``ScanReport`` (a report with its pandas/HTML/file views) live in
:mod:`robustbench_cli.api`, ``ScanConfig`` in :mod:`robustbench_cli.config`, the plain ``Report`` model in
:mod:`robustbench_cli.reports`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from robustbench_cli.core.version import __version__

if TYPE_CHECKING:
    from robustbench_cli.api import ScanOutcome, ScanReport, load_report, run, scan
    from robustbench_cli.config import ScanConfig
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.evaluation.config import RunSpec
    from robustbench_cli.reports import Report
    from robustbench_cli.targets import TargetSpec

_EXPORTS = {
    "scan": "robustbench_cli.api",
    "run": "robustbench_cli.api",
    "ScanOutcome": "robustbench_cli.api",
    "ScanConfig": "robustbench_cli.config",
    "TargetSpec": "robustbench_cli.targets",
    "DataSpec": "robustbench_cli.core.data",
    "RunSpec": "robustbench_cli.evaluation.config",
    "Report": "robustbench_cli.reports",
    "ScanReport": "robustbench_cli.api",
    "load_report": "robustbench_cli.api",
}

__all__ = ["DataSpec", "Report", "RunSpec", "ScanConfig", "ScanOutcome", "ScanReport", "TargetSpec", "__version__",
           "load_report", "run", "scan"]
assert set(__all__) == {"__version__", *_EXPORTS}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robustbench_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
