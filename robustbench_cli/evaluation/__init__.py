"""Evaluation: presets, the cascade, the verifying harness, goals, interrupts, resume state, certificates,
diagnostics, the examples' re-check and guarded targets. The names most callers need are here."""

from robustbench_cli.evaluation.cascade import Progress, evaluate
from robustbench_cli.evaluation.checks import check_compatible, check_run
from robustbench_cli.evaluation.presets import PRESETS, Battery, Entry, get_battery, with_eot, with_transfer

__all__ = ["PRESETS", "Battery", "Entry", "Progress", "check_compatible", "check_run", "evaluate", "get_battery",
           "with_eot", "with_transfer"]
